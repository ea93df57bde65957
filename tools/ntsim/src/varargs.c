/* DbgPrint / DbgPrintEx / vDbgPrintEx for ntsim: C-variadic functions with
 * the Microsoft x64 calling convention (the driver calls them as such).
 * A small formatter of the DbgPrint subset (%s %S %c %d %i %u %x %X %p %%,
 * the l, ll, I64, z and h size prefixes, width and '0'/'-' flags, %wZ),
 * since the host's vsnprintf cannot take a Microsoft va_list. The text
 * goes to ntsim_dbgprint_sink (Rust). Written for ntsim; no code copied. */
#include <stddef.h>
#include <stdint.h>

extern void ntsim_dbgprint_sink(uint32_t component, uint32_t level, const char *text, size_t len);

typedef struct {
    uint16_t Length;
    uint16_t MaximumLength;
    uint16_t *Buffer;
} ntsim_unicode_string;

struct out {
    char buf[1024];
    size_t len;
};

static void put(struct out *o, char c) {
    if (o->len + 1 < sizeof o->buf)
        o->buf[o->len++] = c;
}

static void put_num(struct out *o, unsigned long long v, int neg, unsigned base, int upper, int width, int zero, int left) {
    char tmp[32];
    int n = 0;
    const char *digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";
    do {
        tmp[n++] = digits[v % base];
        v /= base;
    } while (v && n < 30);
    if (neg)
        tmp[n++] = '-';
    int pad = width > n ? width - n : 0;
    if (!left)
        while (pad-- > 0)
            put(o, zero ? '0' : ' ');
    while (n > 0)
        put(o, tmp[--n]);
    if (left)
        while (pad-- > 0)
            put(o, ' ');
}

static void format(struct out *o, const char *fmt, __builtin_ms_va_list ap) {
    if (!fmt)
        return;
    for (const char *p = fmt; *p; p++) {
        if (*p != '%') {
            put(o, *p);
            continue;
        }
        p++;
        int zero = 0, left = 0, width = 0, size = 0; /* size: 0 int, 1 long (32 on Windows), 2 64-bit, -1 short */
        for (;; p++) {
            if (*p == '0') zero = 1;
            else if (*p == '-') left = 1;
            else break;
        }
        while (*p >= '0' && *p <= '9')
            width = width * 10 + (*p++ - '0');
        if (*p == 'l' && p[1] == 'l') { size = 2; p += 2; }
        else if (*p == 'l') { size = 1; p++; }
        else if (*p == 'h') { size = -1; p++; }
        else if (*p == 'z' || *p == 'I') {
            if (p[0] == 'I' && p[1] == '6' && p[2] == '4') p += 3; else p++;
            size = 2;
        }
        switch (*p) {
        case '%': put(o, '%'); break;
        case 'c': put(o, (char)__builtin_va_arg(ap, int)); break;
        case 's': {
            const char *s = __builtin_va_arg(ap, const char *);
            if (!s) s = "(null)";
            size_t n = 0;
            while (s[n]) n++;
            int pad = width > (int)n ? width - (int)n : 0;
            if (!left) while (pad-- > 0) put(o, ' ');
            for (size_t i = 0; i < n; i++) put(o, s[i]);
            if (left) while (pad-- > 0) put(o, ' ');
            break;
        }
        case 'S': case 'w': {
            if (*p == 'w' && p[1] == 'Z') {
                p++;
                const ntsim_unicode_string *u = __builtin_va_arg(ap, const ntsim_unicode_string *);
                if (u && u->Buffer)
                    for (size_t i = 0; i < u->Length / 2u; i++) put(o, u->Buffer[i] < 128 ? (char)u->Buffer[i] : '?');
                break;
            }
            const uint16_t *w = __builtin_va_arg(ap, const uint16_t *);
            for (; w && *w; w++) put(o, *w < 128 ? (char)*w : '?');
            break;
        }
        case 'd': case 'i': {
            long long v = size == 2 ? __builtin_va_arg(ap, long long) : (long long)__builtin_va_arg(ap, int);
            if (size == -1) v = (short)v;
            put_num(o, v < 0 ? (unsigned long long)(-(v + 1)) + 1 : (unsigned long long)v, v < 0, 10, 0, width, zero, left);
            break;
        }
        case 'u': case 'x': case 'X': {
            unsigned long long v = size == 2 ? __builtin_va_arg(ap, unsigned long long) : (unsigned long long)__builtin_va_arg(ap, unsigned int);
            if (size == -1) v = (unsigned short)v;
            put_num(o, v, 0, *p == 'u' ? 10 : 16, *p == 'X', width, zero, left);
            break;
        }
        case 'p':
            put_num(o, (unsigned long long)(uintptr_t)__builtin_va_arg(ap, void *), 0, 16, 1, 16, 1, 0);
            break;
        case 0:
            p--;
            break;
        default:
            put(o, '%');
            put(o, *p);
            break;
        }
    }
}

static void emit(uint32_t component, uint32_t level, const char *fmt, __builtin_ms_va_list ap) {
    struct out o;
    o.len = 0;
    format(&o, fmt, ap);
    ntsim_dbgprint_sink(component, level, o.buf, o.len);
}

__attribute__((ms_abi)) uint32_t ntsim_DbgPrint(const char *fmt, ...) {
    __builtin_ms_va_list ap;
    __builtin_ms_va_start(ap, fmt);
    emit(0xffffffffu, 0, fmt, ap);
    __builtin_ms_va_end(ap);
    return 0;
}

__attribute__((ms_abi)) uint32_t ntsim_DbgPrintEx(uint32_t component, uint32_t level, const char *fmt, ...) {
    __builtin_ms_va_list ap;
    __builtin_ms_va_start(ap, fmt);
    emit(component, level, fmt, ap);
    __builtin_ms_va_end(ap);
    return 0;
}

__attribute__((ms_abi)) uint32_t ntsim_vDbgPrintEx(uint32_t component, uint32_t level, const char *fmt, __builtin_ms_va_list ap) {
    emit(component, level, fmt, ap);
    return 0;
}
