// Vectorized scanning and canonicalization of JSON string bodies for cacheroute's key extraction.
//
// The one primitive Swift cannot express portably at speed (a byte-compare bit mask, SSE2
// `pmovmskb`): find a string's closing quote, skipping escaped quotes, and report in the same pass
// what the Swift side must look at. Everything else (decoding, canonical form) stays in Swift.
#ifndef CJSONSCAN_H
#define CJSONSCAN_H

#include <stddef.h>
#include <stdint.h>

/// The body contains a backslash (any escape).
#define CJS_ESCAPES 1u
/// The body contains an escape other than `\n \" \\ \t \r`: one the canonical form rewrites
/// (`\/`, `\u`), a rarer one, or an invalid one. The caller walks such a string byte by byte.
#define CJS_REWRITE 2u
/// The body contains a raw control byte (below 0x20), which JSON forbids.
#define CJS_CONTROL 4u
/// The body contains a byte of 0x80 or above.
#define CJS_NONASCII 8u
/// The body contains invalid UTF-8 (`cjs_validate_utf8` finds where).
#define CJS_BAD_UTF8 16u

typedef struct {
    /// Index of the closing quote, or `length` when the string is unterminated.
    size_t end;
    /// CJS_* flags for the bytes before `end`.
    uint32_t flags;
} cjs_string_scan;

/// Scans the body of a JSON string that starts at `from` (just after its opening quote), validating
/// its UTF-8 on the way. Uses AVX-512 where the CPU has it, else AVX2, else SSE2, else plain C.
cjs_string_scan cjs_scan_string(const uint8_t *bytes, size_t from, size_t length);

/// The same scan in plain C (no vector instructions), for tests that compare the two.
cjs_string_scan cjs_scan_string_portable(const uint8_t *bytes, size_t from, size_t length);

/// Upper bound of `cjs_scan_implementation_count`.
#define CJS_MAX_IMPLEMENTATIONS 5

/// How many implementations of the scan this CPU runs (AVX-512 VBMI, AVX-512, AVX2, SSE2, plain
/// C, whichever it has): `cjs_scan_string` uses the first, the plain C scan is the last.
size_t cjs_scan_implementation_count(void);

/// The scan by implementation `implementation` (below `cjs_scan_implementation_count()`), for
/// tests that hold every one to the plain C scan.
cjs_string_scan cjs_scan_string_using(size_t implementation, const uint8_t *bytes, size_t from, size_t length);

/// Why `cjs_canonicalize` stopped early (`error` of its result; `at` is the index, `byte` the byte).
enum {
    CJS_CANONICAL_OK = 0,
    /// A raw control byte (`byte`), which JSON forbids.
    CJS_CANONICAL_CONTROL,
    /// A backslash is the string's last byte.
    CJS_CANONICAL_ESCAPE_AT_END,
    /// A backslash and `byte` are no JSON escape.
    CJS_CANONICAL_BAD_ESCAPE,
    /// Fewer than four bytes follow a `\u` (`at`: its backslash).
    CJS_CANONICAL_TRUNCATED_U,
    /// `byte` of a `\u` escape is no hex digit.
    CJS_CANONICAL_BAD_HEX,
    /// A high surrogate without a `\u` after it (`at`: its backslash).
    CJS_CANONICAL_LONE_HIGH,
    /// A high surrogate followed by a `\u` that is not a low surrogate.
    CJS_CANONICAL_HIGH_WITHOUT_LOW,
    /// A low surrogate with no high surrogate before it.
    CJS_CANONICAL_LONE_LOW,
};

typedef struct {
    /// Bytes written to `out`.
    size_t written;
    /// CJS_CANONICAL_*.
    int error;
    size_t at;
    uint8_t byte;
} cjs_canonical_result;

/// Writes cacheroute's canonical form of the JSON string body `bytes[from..<end]` (`end`: its
/// closing quote, as `cjs_scan_string` found it) to `out`, which has room for `end - from` bytes:
/// neither form below is ever longer than the JSON. The canonical form is the minimal escaping
/// (`\" \\ \b \f \n \r \t` kept, `\/` as `/`, `\u` as raw UTF-8 except the escapes just named
/// and `\u00xx` for other control characters); with `decode`, the fully decoded UTF-8 text instead.
/// Raw UTF-8 is copied as it is: the scan already validated it.
cjs_canonical_result cjs_canonicalize(const uint8_t *bytes, size_t from, size_t end, uint8_t *out, int decode);

/// Whether `bytes[from..<end]` is valid UTF-8 (no overlongs, surrogates or values past U+10FFFF).
/// Returns the index of the first invalid byte, or `end` if valid.
size_t cjs_validate_utf8(const uint8_t *bytes, size_t from, size_t end);

#endif
