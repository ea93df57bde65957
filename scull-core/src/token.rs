//! Two decisions of the Windows driver's caller identity (`scull-wdm`'s
//! `ident.rs`) that only a real NT kernel reaches, kept pure so that the host
//! tests them. The NT plumbing around them (IRP fields, token handles, pool
//! buffers) stays in the driver; these functions see only plain values and
//! closures.
//!
//! - [`token_for_create`]: which access token identifies the requestor of an
//!   IRP_MJ_CREATE.
//! - [`effective_token`] and [`impersonation_may_act`]: the thread's
//!   effective token where no create subject context exists (ioctls), and
//!   whether an impersonation token may lend its privilege.
//! - [`query_sized`]: the "ask, grow to the returned length, ask again" loop
//!   of `ZwQueryInformationToken`.

/// `STATUS_BUFFER_TOO_SMALL`: the buffer cannot hold the record; the
/// routine's `ReturnLength` says how many bytes it needs.
pub const STATUS_BUFFER_TOO_SMALL: i32 = 0xC000_0023_u32 as i32;
/// `STATUS_BUFFER_OVERFLOW` (a warning): the buffer was filled partially.
/// ZwQueryInformationToken does not return it for TokenGroups, but a
/// partial record is as unusable as none, so it is retried the same way.
pub const STATUS_BUFFER_OVERFLOW: i32 = 0x8000_0005_u32 as i32;
/// `STATUS_INSUFFICIENT_RESOURCES`: the pool had no buffer of that size.
pub const STATUS_INSUFFICIENT_RESOURCES: i32 = 0xC000_009A_u32 as i32;

/// `STATUS_NO_TOKEN`: ZwOpenThreadTokenEx on a thread that is not
/// impersonating.
pub const STATUS_NO_TOKEN: i32 = 0xC000_007C_u32 as i32;
/// `SecurityImpersonation`: the lowest SECURITY_IMPERSONATION_LEVEL at
/// which a server may act as its client (below it, Anonymous and
/// Identification, it may only identify the client).
pub const SECURITY_IMPERSONATION: u32 = 2;

/// What identifies the requestor of a create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenChoice<T> {
    /// This token from the create's `SECURITY_SUBJECT_CONTEXT`.
    Subject(T),
    /// No subject context (an ioctl, or a create from Wine, which passes a
    /// NULL `SecurityContext`): the requesting thread's effective token
    /// ([`effective_token`]).
    Effective,
}

/// The thread's effective token, from the status of
/// `ZwOpenThreadTokenEx(NtCurrentThread(), TOKEN_QUERY, ...)` in the
/// requestor's thread (a top-level driver's dispatch runs there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effective {
    /// The thread impersonates: its impersonation token (the client's).
    Thread,
    /// STATUS_NO_TOKEN: not impersonating: the process's primary token.
    Process,
    /// The thread impersonates but its token could not be opened (e.g.
    /// STATUS_CANT_OPEN_ANONYMOUS): refuse; never fall back to the
    /// process token, which is the server's, not the client's.
    Fail(i32),
}

/// Which token is the thread's effective token. The rule is the one
/// `SeCaptureSubjectContext` + `SeQuerySubjectContextToken` apply: the
/// impersonation token if the thread has one, else the primary token. So an
/// administrator service impersonating a plain client is the plain client.
pub fn effective_token(open_thread_token: i32) -> Effective {
    match open_thread_token {
        s if s >= 0 => Effective::Thread,
        STATUS_NO_TOKEN => Effective::Process,
        s => Effective::Fail(s),
    }
}

/// Whether an impersonation token at `level` (TokenImpersonationLevel;
/// `None`: the query failed) may lend its privilege: only at
/// SecurityImpersonation or above may the server act as the client, as
/// SeAccessCheck refuses a lower level (STATUS_BAD_IMPERSONATION_LEVEL).
/// An administrator client that allowed identification only grants nothing.
pub fn impersonation_may_act(level: Option<u32>) -> bool {
    level.is_some_and(|l| l >= SECURITY_IMPERSONATION)
}

/// The token that identifies the requestor of an IRP_MJ_CREATE.
///
/// `subject` is `None` when the I/O manager passed no subject context
/// (`Parameters.Create.SecurityContext` or its `AccessState` is NULL, as under
/// Wine), else the context's `(ClientToken, PrimaryToken)`, each `None` when
/// NULL. The rule is the one the WDK's `SeQuerySubjectContextToken` encodes:
/// the client (impersonation) token when the thread impersonates, else the
/// primary token captured with it. So a service impersonating a client opens
/// the device as the client. Without any token in the context, the caller
/// falls back to the thread's effective token ([`effective_token`]).
pub fn token_for_create<T>(subject: Option<(Option<T>, Option<T>)>) -> TokenChoice<T> {
    match subject {
        Some((Some(client), _)) => TokenChoice::Subject(client),
        Some((None, Some(primary))) => TokenChoice::Subject(primary),
        Some((None, None)) | None => TokenChoice::Effective,
    }
}

/// Bytes asked for first: the whole record for a typical token's TokenUser
/// and TokenGroups, so one call usually suffices.
pub const FIRST_LEN: usize = 1024;
/// Queries made at most. A token's TokenGroups does not change size between
/// two calls, so the second call succeeds; the rest is margin.
pub const MAX_TRIES: usize = 4;
/// Largest buffer asked for. A token holds at most 1024 groups; with
/// `SECURITY_MAX_SID_SIZE` (68) bytes per SID and 16 per SID_AND_ATTRIBUTES
/// that is under 88 KiB.
pub const MAX_LEN: usize = 128 * 1024;

/// Runs a size-reporting query until its record fits, as
/// `ZwQueryInformationToken` wants to be called: with too small a buffer it
/// fails with STATUS_BUFFER_TOO_SMALL and sets `ReturnLength` to the size it
/// needs.
///
/// `alloc(len)` returns a buffer of at least `len` bytes (or `None`: the pool
/// is exhausted); `query(&mut buf, len)` runs the query over `len` bytes of
/// it and returns `(status, return_length)`. Each buffer that was too small
/// is dropped (freed) before the next is allocated. Returns the buffer that
/// holds the record and the record's length, or the failing NTSTATUS:
/// the query's own error, STATUS_INSUFFICIENT_RESOURCES when `alloc` fails,
/// or STATUS_BUFFER_TOO_SMALL when the record would exceed [`MAX_LEN`] or
/// did not fit after [`MAX_TRIES`] queries.
pub fn query_sized<B>(
    mut alloc: impl FnMut(usize) -> Option<B>,
    mut query: impl FnMut(&mut B, usize) -> (i32, u32),
) -> Result<(B, usize), i32> {
    let mut len = FIRST_LEN;
    for _ in 0..MAX_TRIES {
        let mut buf = alloc(len).ok_or(STATUS_INSUFFICIENT_RESOURCES)?;
        let (status, needed) = query(&mut buf, len);
        let needed = needed as usize;
        match status {
            s if s >= 0 && s != STATUS_BUFFER_OVERFLOW => return Ok((buf, needed.min(len))),
            STATUS_BUFFER_TOO_SMALL | STATUS_BUFFER_OVERFLOW => {
                drop(buf);
                // A length that is no larger than what was just refused would
                // loop forever: grow by half instead.
                len = if needed > len { needed } else { len + len / 2 };
                if len > MAX_LEN {
                    return Err(STATUS_BUFFER_TOO_SMALL);
                }
            }
            s => return Err(s),
        }
    }
    Err(STATUS_BUFFER_TOO_SMALL)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn create_token_prefers_the_client_token() {
        // A service impersonating a client: ClientToken set.
        assert_eq!(token_for_create(Some((Some(1), Some(2)))), TokenChoice::Subject(1));
        // No impersonation: the primary token of the subject context.
        assert_eq!(token_for_create(Some((None, Some(2)))), TokenChoice::Subject(2));
        // No token at all, or no context (Wine): the thread's effective token.
        assert_eq!(token_for_create::<u8>(Some((None, None))), TokenChoice::Effective);
        assert_eq!(token_for_create::<u8>(None), TokenChoice::Effective);
    }

    /// An ioctl carries no subject context; a privilege check on the
    /// requesting process's primary token would let an administrator service
    /// impersonating a plain client pass privileged commands for it.
    #[test]
    fn ioctls_use_the_threads_effective_token() {
        // "ZwOpenThreadTokenEx": STATUS_NO_TOKEN when the thread is not
        // impersonating; "SeQuerySubjectContextToken": the client token if
        // the thread impersonates, else the primary token.
        assert_eq!(effective_token(0), Effective::Thread, "impersonating: the client's token");
        assert_eq!(effective_token(STATUS_NO_TOKEN), Effective::Process, "not impersonating: the process token");
        // An impersonating thread whose token cannot be opened is refused,
        // never judged by the server's own process token.
        let cant_open_anonymous = 0xC000_0121_u32 as i32;
        assert_eq!(effective_token(cant_open_anonymous), Effective::Fail(cant_open_anonymous));
        assert_eq!(effective_token(0xC000_0022_u32 as i32), Effective::Fail(0xC000_0022_u32 as i32));
        // "SECURITY_IMPERSONATION_LEVEL": Anonymous 0, Identification 1,
        // Impersonation 2, Delegation 3.
        assert!(!impersonation_may_act(Some(0)));
        assert!(!impersonation_may_act(Some(1)), "identification only: no privilege");
        assert!(impersonation_may_act(Some(2)));
        assert!(impersonation_may_act(Some(3)));
        assert!(!impersonation_may_act(None), "level unknown: no privilege");
    }

    /// A buffer that counts itself in `live` until dropped (as a pool block
    /// counts in the driver's outstanding-block counter).
    struct Tracked<'a> {
        bytes: Vec<u8>,
        live: &'a Cell<isize>,
    }

    impl Drop for Tracked<'_> {
        fn drop(&mut self) {
            self.live.set(self.live.get() - 1);
        }
    }

    fn alloc<'a>(live: &'a Cell<isize>) -> impl FnMut(usize) -> Option<Tracked<'a>> + 'a {
        move |len| {
            live.set(live.get() + 1);
            Some(Tracked { bytes: vec![0u8; len], live })
        }
    }

    /// A fake ZwQueryInformationToken(TokenGroups) over a token with
    /// `groups` groups: 8 bytes of header (GroupCount + padding), 16 per
    /// SID_AND_ATTRIBUTES and a 28-byte domain SID per group.
    struct FakeToken {
        groups: usize,
        calls: Cell<usize>,
    }

    impl FakeToken {
        fn needed(&self) -> usize {
            8 + self.groups * (16 + 28)
        }

        fn query(&self, buf: &mut Tracked<'_>, len: usize) -> (i32, u32) {
            self.calls.set(self.calls.get() + 1);
            assert!(buf.bytes.len() >= len, "the query never writes past the buffer");
            let need = self.needed();
            if len < need {
                return (STATUS_BUFFER_TOO_SMALL, need as u32);
            }
            buf.bytes[..need].fill(0xAB);
            (0, need as u32)
        }
    }

    fn run<'a>(t: &FakeToken, live: &'a Cell<isize>) -> Result<(Tracked<'a>, usize), i32> {
        query_sized(alloc(live), |b, len| t.query(b, len))
    }

    #[test]
    fn few_groups_take_one_query() {
        let t = FakeToken { groups: 10, calls: Cell::new(0) };
        let live = Cell::new(0);
        let (buf, len) = run(&t, &live).unwrap();
        assert_eq!(len, t.needed());
        assert!(buf.bytes[..len].iter().all(|&b| b == 0xAB));
        assert_eq!(t.calls.get(), 1);
        assert_eq!(live.get(), 1, "only the returned buffer is live");
    }

    /// A token with 40 groups (about 1.7 KiB of TokenGroups) does not fit a
    /// fixed 1 KiB buffer, which would cost an administrator the override. The loop sizes the buffer from ReturnLength.
    #[test]
    fn many_groups_are_read_whole() {
        for groups in [30, 40, 200, 1024] {
            let t = FakeToken { groups, calls: Cell::new(0) };
            let live = Cell::new(0);
            let (buf, len) = run(&t, &live).unwrap_or_else(|st| panic!("{groups} groups: status {st:#x}"));
            assert_eq!(len, t.needed(), "{groups} groups");
            assert!(buf.bytes.len() >= t.needed());
            assert!(buf.bytes[..len].iter().all(|&b| b == 0xAB));
            assert_eq!(t.calls.get(), 2, "{groups} groups: one refusal, then the sized query");
            assert_eq!(live.get(), 1, "{groups} groups: the refused buffer was freed");
            drop(buf);
            assert_eq!(live.get(), 0);
        }
    }

    #[test]
    fn errors_and_limits() {
        // The query's own failure is returned as is, after one call.
        let (calls, live) = (Cell::new(0), Cell::new(0));
        let r = query_sized(alloc(&live), |_, _| {
            calls.set(calls.get() + 1);
            (0xC000_0022_u32 as i32, 0)
        });
        assert_eq!(r.err(), Some(0xC000_0022_u32 as i32));
        assert_eq!(calls.get(), 1);
        assert_eq!(live.get(), 0, "freed on the error path");
        // An exhausted pool.
        let r = query_sized(|_| None::<Vec<u8>>, |_, _| unreachable!());
        assert_eq!(r.err(), Some(STATUS_INSUFFICIENT_RESOURCES));
        // A record larger than MAX_LEN is refused without allocating it.
        let (biggest, live) = (Cell::new(0), Cell::new(0));
        let mut a = alloc(&live);
        let r = query_sized(
            |len| {
                biggest.set(biggest.get().max(len));
                a(len)
            },
            |_, _| (STATUS_BUFFER_TOO_SMALL, (MAX_LEN + 1) as u32),
        );
        assert_eq!(r.err(), Some(STATUS_BUFFER_TOO_SMALL));
        assert_eq!(biggest.get(), FIRST_LEN);
        assert_eq!(live.get(), 0);
        // A record that keeps growing (or a ReturnLength that never helps) is
        // bounded by MAX_TRIES queries.
        let (calls, live) = (Cell::new(0), Cell::new(0));
        let r = query_sized(alloc(&live), |_, len| {
            calls.set(calls.get() + 1);
            (STATUS_BUFFER_TOO_SMALL, len as u32)
        });
        assert_eq!(r.err(), Some(STATUS_BUFFER_TOO_SMALL));
        assert_eq!(calls.get(), MAX_TRIES);
        assert_eq!(live.get(), 0);
    }
}
