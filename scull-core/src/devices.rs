//! The device set and its names on each kernel.
//!
//! | device          | Linux node          | Windows device object   | DOS link (user path)   |
//! |-----------------|---------------------|-------------------------|------------------------|
//! | Scull(n)        | `/dev/scull<n>`     | `\Device\Scull<n>`      | `\\.\Scull<n>`         |
//! | Pipe(n)         | `/dev/scullpipe<n>` | `\Device\ScullPipe<n>`  | `\\.\ScullPipe<n>`     |
//! | Single          | `/dev/scullsingle`  | `\Device\ScullSingle`   | `\\.\ScullSingle`      |
//! | Uid             | `/dev/sculluid`     | `\Device\ScullUid`      | `\\.\ScullUid`         |
//! | Wuid            | `/dev/scullwuid`    | `\Device\ScullWuid`     | `\\.\ScullWuid`        |
//! | Priv            | `/dev/scullpriv`    | `\Device\ScullPriv`     | `\\.\ScullPriv`        |

use core::fmt;

/// One scull device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dev {
    /// Quantum store `scull<n>`.
    Scull(u8),
    /// FIFO `scullpipe<n>`.
    Pipe(u8),
    /// One open at a time.
    Single,
    /// One user at a time, others get EBUSY.
    Uid,
    /// One user at a time, others wait.
    Wuid,
    /// One private device per key (tty / logon session).
    Priv,
}

impl Dev {
    /// Is this a quantum-store device (seekable, trimmed on write-only open)?
    pub const fn is_store(self) -> bool {
        !matches!(self, Dev::Pipe(_))
    }

    /// The device's own store among an adapter's: `scull[n]`, `single`,
    /// `uid` or `wuid`. None for a pipe (no store), for scullpriv (one store
    /// per key) and for a scull device the load does not have.
    pub fn own_store<'a, S>(self, scull: &'a [S], single: &'a S, uid: &'a S, wuid: &'a S) -> Option<&'a S> {
        match self {
            Dev::Scull(n) => scull.get(n as usize),
            Dev::Single => Some(single),
            Dev::Uid => Some(uid),
            Dev::Wuid => Some(wuid),
            Dev::Pipe(_) | Dev::Priv => None,
        }
    }

    /// Linux node name without `/dev/`.
    pub fn linux_name(self, w: &mut dyn fmt::Write) -> fmt::Result {
        match self {
            Dev::Scull(n) => write!(w, "scull{n}"),
            Dev::Pipe(n) => write!(w, "scullpipe{n}"),
            Dev::Single => w.write_str("scullsingle"),
            Dev::Uid => w.write_str("sculluid"),
            Dev::Wuid => w.write_str("scullwuid"),
            Dev::Priv => w.write_str("scullpriv"),
        }
    }

    /// Windows name without `\Device\` or `\\.\`.
    pub fn windows_name(self, w: &mut dyn fmt::Write) -> fmt::Result {
        match self {
            Dev::Scull(n) => write!(w, "Scull{n}"),
            Dev::Pipe(n) => write!(w, "ScullPipe{n}"),
            Dev::Single => w.write_str("ScullSingle"),
            Dev::Uid => w.write_str("ScullUid"),
            Dev::Wuid => w.write_str("ScullWuid"),
            Dev::Priv => w.write_str("ScullPriv"),
        }
    }

    /// Parses a Linux or Windows name (case-insensitive, no prefix).
    pub fn parse(s: &str) -> Option<Dev> {
        let lower = |a: &str, b: &str| a.len() >= b.len() && a[..b.len()].eq_ignore_ascii_case(b);
        let num = |rest: &str| rest.parse::<u8>().ok();
        if s.eq_ignore_ascii_case("scullsingle") {
            Some(Dev::Single)
        } else if s.eq_ignore_ascii_case("sculluid") {
            Some(Dev::Uid)
        } else if s.eq_ignore_ascii_case("scullwuid") {
            Some(Dev::Wuid)
        } else if s.eq_ignore_ascii_case("scullpriv") {
            Some(Dev::Priv)
        } else if lower(s, "scullpipe") {
            num(&s[9..]).map(Dev::Pipe)
        } else if lower(s, "scull") {
            num(&s[5..]).map(Dev::Scull)
        } else {
            None
        }
    }
}

/// The device table of one load: `scull_nr_devs` stores, `scull_p_nr_devs`
/// pipes, then the four access devices. Its order is the Linux minor offset,
/// the Windows creation order and the order of every report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Table {
    pub scull: u8,
    pub pipes: u8,
}

impl Table {
    /// The access devices, last in the table.
    pub const ACCESS: [Dev; 4] = [Dev::Single, Dev::Uid, Dev::Wuid, Dev::Priv];

    /// How many devices the table holds.
    pub const fn len(self) -> usize {
        self.scull as usize + self.pipes as usize + Self::ACCESS.len()
    }

    /// Never empty (the access devices are always there).
    pub const fn is_empty(self) -> bool {
        false
    }

    /// The devices in table order.
    pub fn iter(self) -> impl Iterator<Item = Dev> {
        (0..self.scull).map(Dev::Scull).chain((0..self.pipes).map(Dev::Pipe)).chain(Self::ACCESS)
    }

    /// The device at index `i` (a minor number's offset from the first).
    pub fn get(self, i: usize) -> Option<Dev> {
        let (s, p) = (self.scull as usize, self.pipes as usize);
        match i {
            _ if i < s => Some(Dev::Scull(i as u8)),
            _ if i < s + p => Some(Dev::Pipe((i - s) as u8)),
            _ => Self::ACCESS.get(i - s - p).copied(),
        }
    }

    /// The index of `d`, if this load has it.
    pub fn index(self, d: Dev) -> Option<usize> {
        let (s, p) = (self.scull as usize, self.pipes as usize);
        match d {
            Dev::Scull(n) if n < self.scull => Some(n as usize),
            Dev::Pipe(n) if n < self.pipes => Some(s + n as usize),
            Dev::Scull(_) | Dev::Pipe(_) => None,
            _ => Self::ACCESS.iter().position(|&a| a == d).map(|k| s + p + k),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct S([u8; 32], usize);
    impl fmt::Write for S {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            self.0[self.1..self.1 + s.len()].copy_from_slice(s.as_bytes());
            self.1 += s.len();
            Ok(())
        }
    }

    #[test]
    fn names_round_trip() {
        for d in [Dev::Scull(0), Dev::Scull(3), Dev::Pipe(2), Dev::Single, Dev::Uid, Dev::Wuid, Dev::Priv] {
            let mut l = S([0; 32], 0);
            d.linux_name(&mut l).unwrap();
            let mut w = S([0; 32], 0);
            d.windows_name(&mut w).unwrap();
            assert_eq!(Dev::parse(core::str::from_utf8(&l.0[..l.1]).unwrap()), Some(d));
            assert_eq!(Dev::parse(core::str::from_utf8(&w.0[..w.1]).unwrap()), Some(d));
        }
        assert_eq!(Dev::parse("ScullPipe10"), Some(Dev::Pipe(10)));
        assert_eq!(Dev::parse("scullx"), None);
        assert_eq!(Dev::parse("scull"), None);
        assert!(!Dev::Pipe(0).is_store());
        assert!(Dev::Priv.is_store());
        let (scull, s, u, w) = ([10, 11], 1, 2, 3);
        let own = |d: Dev| d.own_store(&scull, &s, &u, &w).copied();
        assert_eq!([Dev::Scull(1), Dev::Single, Dev::Uid, Dev::Wuid].map(own), [Some(11), Some(1), Some(2), Some(3)]);
        assert_eq!([Dev::Scull(2), Dev::Pipe(0), Dev::Priv].map(own), [None; 3]);
    }

    #[test]
    fn table_order_and_indices() {
        let t = Table { scull: 2, pipes: 1 };
        let want = [Dev::Scull(0), Dev::Scull(1), Dev::Pipe(0), Dev::Single, Dev::Uid, Dev::Wuid, Dev::Priv];
        assert_eq!(t.len(), want.len());
        assert!(t.iter().eq(want));
        for (i, d) in want.into_iter().enumerate() {
            assert_eq!(t.get(i), Some(d));
            assert_eq!(t.index(d), Some(i));
        }
        assert_eq!(t.get(want.len()), None);
        assert_eq!(t.index(Dev::Scull(2)), None);
        assert_eq!(t.index(Dev::Pipe(1)), None);
        let empty = Table { scull: 0, pipes: 0 };
        assert_eq!(empty.get(0), Some(Dev::Single));
        assert!(empty.iter().eq(Table::ACCESS));
    }
}
