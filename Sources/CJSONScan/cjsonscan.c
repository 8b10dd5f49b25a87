#include "cjsonscan.h"
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CJS_X86 1
#endif

// Keeps the compiler from looking through a finished bit mask: without it, clang rewrites
// movemask + later bit tests into dozens of per-byte extracts.
#define CJS_OPAQUE(x) __asm__("" : "+r"(x))

// Per 64-byte block: one bit per byte for each class.
typedef struct {
    uint64_t quote, backslash, common_escape, control, nonascii;
} cjs_masks;

#if CJS_X86
static inline void cjs_block_masks_sse2(const uint8_t *p, cjs_masks *m) {
    const __m128i quote = _mm_set1_epi8('"'), backslash = _mm_set1_epi8('\\');
    const __m128i n_ = _mm_set1_epi8('n'), t_ = _mm_set1_epi8('t'), r_ = _mm_set1_epi8('r');
    const __m128i x1f = _mm_set1_epi8(0x1F);
    uint64_t q = 0, b = 0, e = 0, c = 0, n = 0;
    for (int k = 0; k < 4; k++) {
        __m128i v = _mm_loadu_si128((const __m128i *)(p + 16 * k));
        int shift = 16 * k;
        __m128i vq = _mm_cmpeq_epi8(v, quote), vb = _mm_cmpeq_epi8(v, backslash);
        __m128i common = _mm_or_si128(_mm_or_si128(vq, vb),
            _mm_or_si128(_mm_cmpeq_epi8(v, n_), _mm_or_si128(_mm_cmpeq_epi8(v, t_), _mm_cmpeq_epi8(v, r_))));
        q |= (uint64_t)(uint16_t)_mm_movemask_epi8(vq) << shift;
        b |= (uint64_t)(uint16_t)_mm_movemask_epi8(vb) << shift;
        e |= (uint64_t)(uint16_t)_mm_movemask_epi8(common) << shift;
        // v <= 0x1F (unsigned) exactly when max(v, 0x1F) == 0x1F.
        c |= (uint64_t)(uint16_t)_mm_movemask_epi8(_mm_cmpeq_epi8(_mm_max_epu8(v, x1f), x1f)) << shift;
        n |= (uint64_t)(uint16_t)_mm_movemask_epi8(v) << shift;
    }
    CJS_OPAQUE(q);
    CJS_OPAQUE(b);
    CJS_OPAQUE(e);
    CJS_OPAQUE(c);
    CJS_OPAQUE(n);
    m->quote = q, m->backslash = b, m->common_escape = e, m->control = c, m->nonascii = n;
}

__attribute__((target("avx2"))) static inline void cjs_block_masks_avx2(const uint8_t *p, cjs_masks *m) {
    const __m256i quote = _mm256_set1_epi8('"'), backslash = _mm256_set1_epi8('\\');
    const __m256i n_ = _mm256_set1_epi8('n'), t_ = _mm256_set1_epi8('t'), r_ = _mm256_set1_epi8('r');
    const __m256i x1f = _mm256_set1_epi8(0x1F);
    uint64_t q = 0, b = 0, e = 0, c = 0, n = 0;
    for (int k = 0; k < 2; k++) {
        __m256i v = _mm256_loadu_si256((const __m256i *)(p + 32 * k));
        int shift = 32 * k;
        __m256i vq = _mm256_cmpeq_epi8(v, quote), vb = _mm256_cmpeq_epi8(v, backslash);
        __m256i common = _mm256_or_si256(_mm256_or_si256(vq, vb),
            _mm256_or_si256(_mm256_cmpeq_epi8(v, n_), _mm256_or_si256(_mm256_cmpeq_epi8(v, t_), _mm256_cmpeq_epi8(v, r_))));
        q |= (uint64_t)(uint32_t)_mm256_movemask_epi8(vq) << shift;
        b |= (uint64_t)(uint32_t)_mm256_movemask_epi8(vb) << shift;
        e |= (uint64_t)(uint32_t)_mm256_movemask_epi8(common) << shift;
        c |= (uint64_t)(uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(_mm256_max_epu8(v, x1f), x1f)) << shift;
        n |= (uint64_t)(uint32_t)_mm256_movemask_epi8(v) << shift;
    }
    CJS_OPAQUE(q);
    CJS_OPAQUE(b);
    CJS_OPAQUE(e);
    CJS_OPAQUE(c);
    CJS_OPAQUE(n);
    m->quote = q, m->backslash = b, m->common_escape = e, m->control = c, m->nonascii = n;
}

__attribute__((target("avx512bw"))) static inline void cjs_block_masks_avx512(const uint8_t *p, cjs_masks *m) {
    __m512i v = _mm512_loadu_si512((const void *)p);
    uint64_t q = _mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8('"'));
    uint64_t b = _mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8('\\'));
    m->quote = q;
    m->backslash = b;
    m->common_escape = q | b | _mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8('n'))
        | _mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8('t')) | _mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8('r'));
    m->control = _mm512_cmplt_epu8_mask(v, _mm512_set1_epi8(0x20));
    m->nonascii = _mm512_movepi8_mask(v);
}

// Branch-free UTF-8 validation of 32-byte chunks (the "lookup" method of Keiser and Lemire, as in
// simdjson): three table lookups classify each byte pair, a subtraction catches 3- and 4-byte
// continuation counts. Any nonzero byte in `error` means invalid UTF-8.
enum {
    CJS_TOO_SHORT = 1 << 0,
    CJS_TOO_LONG = 1 << 1,
    CJS_OVERLONG_3 = 1 << 2,
    CJS_TOO_LARGE = 1 << 3,
    CJS_SURROGATE = 1 << 4,
    CJS_OVERLONG_2 = 1 << 5,
    CJS_TOO_LARGE_1000 = 1 << 6,
    CJS_OVERLONG_4 = 1 << 6,
    CJS_TWO_CONTS = 1 << 7,
    CJS_CARRY = CJS_TOO_SHORT | CJS_TOO_LONG | CJS_TWO_CONTS,
};

typedef struct {
    __m256i error, prev_input, prev_incomplete;
} cjs_utf8_state;

#define CJS_C(x) ((char)(unsigned char)(x))
#define CJS_T16(a, b, c, d, e, f, g, h, i, j, k, l, m, n, o, p)                                                \
    _mm256_setr_epi8(CJS_C(a), CJS_C(b), CJS_C(c), CJS_C(d), CJS_C(e), CJS_C(f), CJS_C(g), CJS_C(h), CJS_C(i), \
        CJS_C(j), CJS_C(k), CJS_C(l), CJS_C(m), CJS_C(n), CJS_C(o), CJS_C(p), CJS_C(a), CJS_C(b), CJS_C(c),    \
        CJS_C(d), CJS_C(e), CJS_C(f), CJS_C(g), CJS_C(h), CJS_C(i), CJS_C(j), CJS_C(k), CJS_C(l), CJS_C(m),     \
        CJS_C(n), CJS_C(o), CJS_C(p))
// The three lookup tables, by the high nibble of the previous byte, its low nibble, and the high
// nibble of the current byte; written once for both widths.
#define CJS_BYTE_1_HIGH                                                                            \
    CJS_TOO_LONG, CJS_TOO_LONG, CJS_TOO_LONG, CJS_TOO_LONG, CJS_TOO_LONG, CJS_TOO_LONG, CJS_TOO_LONG,     \
        CJS_TOO_LONG, CJS_TWO_CONTS, CJS_TWO_CONTS, CJS_TWO_CONTS, CJS_TWO_CONTS,                         \
        CJS_TOO_SHORT | CJS_OVERLONG_2, CJS_TOO_SHORT, CJS_TOO_SHORT | CJS_OVERLONG_3 | CJS_SURROGATE,    \
        CJS_TOO_SHORT | CJS_TOO_LARGE | CJS_TOO_LARGE_1000 | CJS_OVERLONG_4
#define CJS_BYTE_1_LOW                                                                             \
    CJS_CARRY | CJS_OVERLONG_3 | CJS_OVERLONG_2 | CJS_OVERLONG_4, CJS_CARRY | CJS_OVERLONG_2, CJS_CARRY,   \
        CJS_CARRY, CJS_CARRY | CJS_TOO_LARGE, CJS_CARRY | CJS_TOO_LARGE | CJS_TOO_LARGE_1000,              \
        CJS_CARRY | CJS_TOO_LARGE | CJS_TOO_LARGE_1000, CJS_CARRY | CJS_TOO_LARGE | CJS_TOO_LARGE_1000,    \
        CJS_CARRY | CJS_TOO_LARGE | CJS_TOO_LARGE_1000, CJS_CARRY | CJS_TOO_LARGE | CJS_TOO_LARGE_1000,    \
        CJS_CARRY | CJS_TOO_LARGE | CJS_TOO_LARGE_1000, CJS_CARRY | CJS_TOO_LARGE | CJS_TOO_LARGE_1000,    \
        CJS_CARRY | CJS_TOO_LARGE | CJS_TOO_LARGE_1000,                                                   \
        CJS_CARRY | CJS_TOO_LARGE | CJS_TOO_LARGE_1000 | CJS_SURROGATE,                                   \
        CJS_CARRY | CJS_TOO_LARGE | CJS_TOO_LARGE_1000, CJS_CARRY | CJS_TOO_LARGE | CJS_TOO_LARGE_1000
#define CJS_BYTE_2_HIGH                                                                            \
    CJS_TOO_SHORT, CJS_TOO_SHORT, CJS_TOO_SHORT, CJS_TOO_SHORT, CJS_TOO_SHORT, CJS_TOO_SHORT,               \
        CJS_TOO_SHORT, CJS_TOO_SHORT,                                                                    \
        CJS_TOO_LONG | CJS_OVERLONG_2 | CJS_TWO_CONTS | CJS_OVERLONG_3 | CJS_TOO_LARGE_1000 | CJS_OVERLONG_4, \
        CJS_TOO_LONG | CJS_OVERLONG_2 | CJS_TWO_CONTS | CJS_OVERLONG_3 | CJS_TOO_LARGE,                   \
        CJS_TOO_LONG | CJS_OVERLONG_2 | CJS_TWO_CONTS | CJS_SURROGATE | CJS_TOO_LARGE,                    \
        CJS_TOO_LONG | CJS_OVERLONG_2 | CJS_TWO_CONTS | CJS_SURROGATE | CJS_TOO_LARGE, CJS_TOO_SHORT,     \
        CJS_TOO_SHORT, CJS_TOO_SHORT, CJS_TOO_SHORT
#define CJS_TABLE16(...) CJS_T16(__VA_ARGS__)
#define CJS_PREV(input, prev, n) _mm256_alignr_epi8(input, _mm256_permute2x128_si256(prev, input, 0x21), 16 - (n))

// One step of the lookup method at either width. W(op) names the intrinsic (`_mm256_op` or
// `_mm512_op`), AND/OR/XOR the bitwise ones, PREV(n) the chunk shifted by n bytes with the previous
// chunk's last bytes in front, TABLE a 16-entry table repeated in every 128-bit lane (vpshufb
// indexes within a lane), INCOMPLETE the bytes that leave a sequence open at the chunk's end.
#define CJS_UTF8_LOOKUP(T, W, AND, OR, XOR, PREV, TABLE, INCOMPLETE)                                 \
    do {                                                                                          \
        const T lo4 = W(set1_epi8)(0x0F);                                                         \
        T prev1 = PREV(1);                                                                        \
        T byte_1_high = W(shuffle_epi8)(TABLE(CJS_BYTE_1_HIGH), AND(W(srli_epi16)(prev1, 4), lo4)); \
        T byte_1_low = W(shuffle_epi8)(TABLE(CJS_BYTE_1_LOW), AND(prev1, lo4));                   \
        T byte_2_high = W(shuffle_epi8)(TABLE(CJS_BYTE_2_HIGH), AND(W(srli_epi16)(input, 4), lo4)); \
        T special = AND(AND(byte_1_high, byte_1_low), byte_2_high);                               \
        T third = W(subs_epu8)(PREV(2), W(set1_epi8)((char)(0xE0 - 0x80)));                      \
        T fourth = W(subs_epu8)(PREV(3), W(set1_epi8)((char)(0xF0 - 0x80)));                      \
        T must23_80 = AND(OR(third, fourth), W(set1_epi8)((char)0x80));                           \
        st->error = OR(st->error, XOR(must23_80, special));                                       \
        st->prev_incomplete = W(subs_epu8)(input, INCOMPLETE);                                    \
        st->prev_input = input;                                                                   \
    } while (0)

#define CJS_W256(op) _mm256_##op
#define CJS_PREV256(n) CJS_PREV(input, st->prev_input, n)
// Incomplete if the chunk ends inside a sequence: ... 1111____ 111_____ 11______
#define CJS_INCOMPLETE256                                                                          \
    _mm256_setr_epi8(-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, \
        -1, -1, -1, -1, -1, -1, -1, (char)(0xF0 - 1), (char)(0xE0 - 1), (char)(0xC0 - 1))

__attribute__((target("avx2"))) static inline void cjs_utf8_chunk(cjs_utf8_state *st, __m256i input) {
    if (_mm256_movemask_epi8(input) == 0) {
        st->error = _mm256_or_si256(st->error, st->prev_incomplete);
        st->prev_incomplete = _mm256_setzero_si256();
        st->prev_input = input;
        return;
    }
    CJS_UTF8_LOOKUP(__m256i, CJS_W256, _mm256_and_si256, _mm256_or_si256, _mm256_xor_si256, CJS_PREV256,
        CJS_TABLE16, CJS_INCOMPLETE256);
}

// The same validation, 64 bytes at a time (AVX-512 VBMI: one byte permute brings in the previous
// chunk's last bytes; the lookup tables repeat in each 128-bit lane, as vpshufb indexes per lane).
typedef struct {
    __m512i error, prev_input, prev_incomplete;
} cjs_utf8_state512;

#define CJS_TABLE64(...) _mm512_broadcast_i64x4(CJS_T16(__VA_ARGS__))
#define CJS_PREV512(input, prev, n) \
    _mm512_permutex2var_epi8(prev, _mm512_add_epi8(_mm512_set1_epi8(64 - (n)), cjs_lane_index()), input)

__attribute__((target("avx512bw,avx512vbmi"))) static inline __m512i cjs_lane_index(void) {
    return _mm512_set_epi8(63, 62, 61, 60, 59, 58, 57, 56, 55, 54, 53, 52, 51, 50, 49, 48, 47, 46, 45, 44, 43,
        42, 41, 40, 39, 38, 37, 36, 35, 34, 33, 32, 31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16,
        15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
}

#define CJS_W512(op) _mm512_##op
#define CJS_PREV512N(n) CJS_PREV512(input, st->prev_input, n)
#define CJS_INCOMPLETE512                                                                          \
    _mm512_set_epi8((char)(0xC0 - 1), (char)(0xE0 - 1), (char)(0xF0 - 1), -1, -1, -1, -1, -1, -1, -1, -1, -1, \
        -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, \
        -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1)

__attribute__((target("avx512bw,avx512vbmi"))) static inline void cjs_utf8_chunk512(cjs_utf8_state512 *st,
                                                                                     __m512i input) {
    CJS_UTF8_LOOKUP(__m512i, CJS_W512, _mm512_and_si512, _mm512_or_si512, _mm512_xor_si512, CJS_PREV512N,
        CJS_TABLE64, CJS_INCOMPLETE512);
}
#endif

static inline void cjs_block_masks_scalar(const uint8_t *p, cjs_masks *m) {
    uint64_t q = 0, b = 0, e = 0, c = 0, n = 0;
    for (int i = 0; i < 64; i++) {
        uint8_t x = p[i];
        uint64_t bit = (uint64_t)1 << i;
        if (x == '"') q |= bit;
        if (x == '\\') b |= bit;
        if (x == '"' || x == '\\' || x == 'n' || x == 't' || x == 'r') e |= bit;
        if (x < 0x20) c |= bit;
        if (x >= 0x80) n |= bit;
    }
    m->quote = q, m->backslash = b, m->common_escape = e, m->control = c, m->nonascii = n;
}

// The characters escaped by an odd run of backslashes (simdjson's escape scanner).
// `carry` is 1 when the previous block ended with an unfinished escape.
// Branch-free: with no backslash it reduces to `escaped = carry` (prose has a backslash in about
// every other block, a branch there mispredicts).
static inline uint64_t cjs_escaped(uint64_t backslash, uint64_t *carry) {
    const uint64_t odd = 0xAAAAAAAAAAAAAAAAULL;
    uint64_t potential = backslash & ~*carry;
    uint64_t maybe_escaped = potential << 1;
    uint64_t code = ((maybe_escaped | odd) - potential) ^ odd;
    uint64_t escaped = code ^ (backslash | *carry);
    uint64_t escape = code & backslash;
    *carry = escape >> 63;
    return escaped;
}

// Length of the valid UTF-8 sequence at `i`, or 0 if invalid.
static inline size_t cjs_utf8_sequence(const uint8_t *bytes, size_t i, size_t end) {
    uint8_t lead = bytes[i];
    size_t count;
    uint8_t low = 0x80, high = 0xBF;
    if (lead >= 0xC2 && lead <= 0xDF) {
        count = 2;
    } else if (lead == 0xE0) {
        count = 3, low = 0xA0;
    } else if ((lead >= 0xE1 && lead <= 0xEC) || lead == 0xEE || lead == 0xEF) {
        count = 3;
    } else if (lead == 0xED) {
        count = 3, high = 0x9F;
    } else if (lead == 0xF0) {
        count = 4, low = 0x90;
    } else if (lead >= 0xF1 && lead <= 0xF3) {
        count = 4;
    } else if (lead == 0xF4) {
        count = 4, high = 0x8F;
    } else {
        return 0;
    }
    if (end - i < count || bytes[i + 1] < low || bytes[i + 1] > high) return 0;
    for (size_t k = 2; k < count; k++) {
        if ((bytes[i + k] & 0xC0) != 0x80) return 0;
    }
    return count;
}

// The scan loop, instantiated once per mask builder. UTF8_INIT/UTF8_BLOCK/UTF8_BAD validate the
// blocks that hold non-ASCII bytes: vectorized, or sequence by sequence in plain C. The blocks
// before the closing quote only OR their masks together; the flags are read once at the end.
#define CJS_SCAN_LOOP(BLOCK_MASKS, UTF8_INIT, UTF8_BLOCK, UTF8_BAD)                                  \
    cjs_string_scan result = {length, 0};                                                         \
    uint64_t carry = 0, seen_backslash = 0, seen_rewrite = 0, seen_control = 0, seen_nonascii = 0; \
    size_t i = from;                                                                              \
    cjs_masks m;                                                                                  \
    UTF8_INIT;                                                                                    \
    while (i < length) {                                                                          \
        uint64_t valid = ~(uint64_t)0;                                                            \
        const uint8_t *block = bytes + i;                                                         \
        uint8_t tail[64];                                                                         \
        if (length - i < 64) {                                                                    \
            size_t n = length - i;                                                                \
            memset(tail, 0, sizeof tail);                                                         \
            memcpy(tail, bytes + i, n);                                                           \
            block = tail;                                                                         \
            valid = ((uint64_t)1 << n) - 1;                                                       \
        }                                                                                         \
        BLOCK_MASKS(block, &m);                                                                   \
        uint64_t escaped = cjs_escaped(m.backslash & valid, &carry);                              \
        uint64_t quotes = m.quote & ~escaped & valid;                                             \
        uint64_t upto = quotes ? (quotes & (~quotes + 1)) - 1 : valid;                            \
        seen_backslash |= m.backslash & upto;                                                     \
        seen_rewrite |= escaped & ~m.common_escape & upto;                                        \
        seen_control |= m.control & upto;                                                         \
        if (m.nonascii & upto) {                                                                  \
            seen_nonascii = 1;                                                                    \
            UTF8_BLOCK;                                                                           \
        } else {                                                                                  \
            UTF8_ASCII_BLOCK;                                                                     \
        }                                                                                         \
        if (quotes) {                                                                             \
            result.end = i + (size_t)__builtin_ctzll(quotes);                                     \
            break;                                                                                \
        }                                                                                         \
        i += 64;                                                                                  \
    }                                                                                             \
    result.flags = (seen_backslash != 0) * CJS_ESCAPES | (seen_rewrite != 0) * CJS_REWRITE        \
        | (seen_control != 0) * CJS_CONTROL | (seen_nonascii != 0) * CJS_NONASCII;               \
    if (UTF8_BAD) result.flags |= CJS_BAD_UTF8;                                                   \
    return result;

// Plain C validation: each sequence that starts in the block, checked where its lead byte is.
#define CJS_SCALAR_UTF8_INIT size_t resume = from; int bad_utf8 = 0
#define CJS_SCALAR_UTF8_BLOCK                                                                     \
    do {                                                                                          \
        uint64_t na = m.nonascii & upto;                                                          \
        size_t limit = quotes ? i + (size_t)__builtin_ctzll(quotes) : length;                     \
        do {                                                                                      \
            size_t pos = i + (size_t)__builtin_ctzll(na);                                         \
            if (pos >= resume) {                                                                  \
                size_t count = cjs_utf8_sequence(bytes, pos, limit);                              \
                if (count == 0) bad_utf8 = 1, count = 1;                                          \
                resume = pos + count;                                                             \
            }                                                                                     \
            na &= na - 1;                                                                         \
        } while (na);                                                                             \
    } while (0)
#define CJS_SCALAR_UTF8_BAD bad_utf8

// Vector validation of whole 64-byte blocks; in the block that holds the closing quote, the bytes
// from the quote on are zeroed first (ANDed with a window of `cjs_keep_window` that starts q bytes
// before its zeros: 64 bytes of 0xFF, then 64 zeros), so only the string's own bytes are judged.
#if CJS_X86
static const uint8_t cjs_keep_window[128] = {
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255};
#endif
#define CJS_AVX2_UTF8_INIT                                                                        \
    cjs_utf8_state utf8 = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256()}
#define CJS_AVX2_UTF8_BLOCK                                                                       \
    do {                                                                                          \
        __m256i lo = _mm256_loadu_si256((const __m256i *)block);                                  \
        __m256i hi = _mm256_loadu_si256((const __m256i *)(block + 32));                           \
        if (quotes) {                                                                             \
            const uint8_t *keep = cjs_keep_window + 64 - __builtin_ctzll(quotes);                 \
            lo = _mm256_and_si256(lo, _mm256_loadu_si256((const __m256i *)keep));                 \
            hi = _mm256_and_si256(hi, _mm256_loadu_si256((const __m256i *)(keep + 32)));          \
        }                                                                                         \
        cjs_utf8_chunk(&utf8, lo);                                                                \
        cjs_utf8_chunk(&utf8, hi);                                                                \
    } while (0)
// An unterminated string may also end inside a sequence (a terminated one ends in zeros).
#define CJS_AVX2_UTF8_BAD                                                                         \
    (!_mm256_testz_si256(utf8.error, utf8.error) || !_mm256_testz_si256(utf8.prev_incomplete, utf8.prev_incomplete))

#define UTF8_ASCII_BLOCK (void)0
static cjs_string_scan cjs_scan_scalar(const uint8_t *bytes, size_t from, size_t length) {
    CJS_SCAN_LOOP(cjs_block_masks_scalar, CJS_SCALAR_UTF8_INIT, CJS_SCALAR_UTF8_BLOCK, CJS_SCALAR_UTF8_BAD)
}

#if CJS_X86
static cjs_string_scan cjs_scan_sse2(const uint8_t *bytes, size_t from, size_t length) {
    CJS_SCAN_LOOP(cjs_block_masks_sse2, CJS_SCALAR_UTF8_INIT, CJS_SCALAR_UTF8_BLOCK, CJS_SCALAR_UTF8_BAD)
}
#undef UTF8_ASCII_BLOCK
// After an all-ASCII block, a sequence left open at the end of the previous one is an error.
#define UTF8_ASCII_BLOCK                                                                          \
    do {                                                                                          \
        utf8.error = _mm256_or_si256(utf8.error, utf8.prev_incomplete);                          \
        utf8.prev_incomplete = _mm256_setzero_si256();                                           \
        utf8.prev_input = _mm256_setzero_si256();                                                \
    } while (0)

__attribute__((target("avx2"))) static cjs_string_scan cjs_scan_avx2(const uint8_t *bytes, size_t from,
                                                                      size_t length) {
    CJS_SCAN_LOOP(cjs_block_masks_avx2, CJS_AVX2_UTF8_INIT, CJS_AVX2_UTF8_BLOCK, CJS_AVX2_UTF8_BAD)
}

__attribute__((target("avx512bw,avx2"))) static cjs_string_scan cjs_scan_avx512(const uint8_t *bytes,
                                                                                size_t from, size_t length) {
    CJS_SCAN_LOOP(cjs_block_masks_avx512, CJS_AVX2_UTF8_INIT, CJS_AVX2_UTF8_BLOCK, CJS_AVX2_UTF8_BAD)
}

// The AVX-512 VBMI scan, written out rather than from the macro: masked loads read a partial
// last block in place, and the bytes past the closing quote are replaced with a plain letter, so
// the block's control and non-ASCII checks accumulate as a byte minimum and maximum over the string
// (read once at the end) and its UTF-8 is validated 64 bytes at a time only where it is not ASCII.
// An escape's letter is checked against `" \ n t r` with one byte permute of this table, indexed
// by the low 6 bits: each of the five sits at its own index, and nothing else equals its entry.
static const uint8_t cjs_common_escape_table[64] = {
    0xFF, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, '\\', 0, 0, 0,
    0, 0, '"', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 'n', 0, 0, 0, 'r', 0, 't', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};

__attribute__((target("avx512bw,avx512vbmi"))) static cjs_string_scan cjs_scan_avx512vbmi(const uint8_t *bytes,
                                                                                       size_t from, size_t length) {
    const __m512i quote = _mm512_set1_epi8('"'), backslash = _mm512_set1_epi8('\\');
    const __m512i letter = _mm512_set1_epi8('a');
    const __m512i common = _mm512_loadu_si512((const void *)cjs_common_escape_table);
    cjs_string_scan result = {length, 0};
    uint64_t carry = 0, seen_backslash = 0, seen_rewrite = 0;
    __m512i lowest = _mm512_set1_epi8((char)0xFF), highest = _mm512_setzero_si512();
    cjs_utf8_state512 utf8 = {_mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512()};
    int in_utf8 = 0;  // the last block was validated: a sequence may be open across the edge
    for (size_t i = from; i < length; i += 64) {
        uint64_t valid = length - i < 64 ? ((uint64_t)1 << (length - i)) - 1 : ~(uint64_t)0;
        __m512i v = _mm512_mask_loadu_epi8(letter, valid, bytes + i);
        uint64_t bs = _mm512_cmpeq_epi8_mask(v, backslash);
        uint64_t escaped = cjs_escaped(bs, &carry) & valid;
        uint64_t quotes = _mm512_cmpeq_epi8_mask(v, quote) & ~escaped;
        uint64_t upto = quotes ? (quotes & (~quotes + 1)) - 1 : valid;
        if (quotes) v = _mm512_mask_mov_epi8(letter, upto, v);
        uint64_t is_common = _mm512_cmpeq_epi8_mask(_mm512_permutexvar_epi8(v, common), v);
        seen_backslash |= bs & upto;
        seen_rewrite |= escaped & ~is_common & upto;
        lowest = _mm512_min_epu8(lowest, v);
        highest = _mm512_max_epu8(highest, v);
        if (_mm512_movepi8_mask(v)) {
            cjs_utf8_chunk512(&utf8, v);
            in_utf8 = 1;
        } else if (in_utf8) {
            // An all-ASCII block: a sequence left open at the end of the previous one is an error.
            utf8.error = _mm512_or_si512(utf8.error, utf8.prev_incomplete);
            utf8.prev_incomplete = _mm512_setzero_si512();
            utf8.prev_input = _mm512_setzero_si512();
            in_utf8 = 0;
        }
        if (quotes) {
            result.end = i + (size_t)__builtin_ctzll(quotes);
            break;
        }
    }
    // An unterminated string may end inside a sequence (a terminated one ends in letters).
    utf8.error = _mm512_or_si512(utf8.error, utf8.prev_incomplete);
    result.flags = (seen_backslash != 0) * CJS_ESCAPES | (seen_rewrite != 0) * CJS_REWRITE
        | (_mm512_cmplt_epu8_mask(lowest, _mm512_set1_epi8(0x20)) != 0) * CJS_CONTROL
        | (_mm512_movepi8_mask(highest) != 0) * CJS_NONASCII
        | (_mm512_test_epi8_mask(utf8.error, utf8.error) != 0) * CJS_BAD_UTF8;
    return result;
}
#endif

typedef cjs_string_scan (*cjs_scan_fn)(const uint8_t *, size_t, size_t);

// Every implementation this CPU can run, best first; the plain C scan is always last.
static size_t cjs_implementations(cjs_scan_fn *out) {
    size_t n = 0;
#if CJS_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vbmi")) out[n++] = cjs_scan_avx512vbmi;
    if (__builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx2")) out[n++] = cjs_scan_avx512;
    if (__builtin_cpu_supports("avx2")) out[n++] = cjs_scan_avx2;
    out[n++] = cjs_scan_sse2;
#endif
    out[n++] = cjs_scan_scalar;
    return n;
}

// Chosen once; a race between first callers is benign (both store the same pointer).
static cjs_scan_fn cjs_scan_impl = 0;

cjs_string_scan cjs_scan_string(const uint8_t *bytes, size_t from, size_t length) {
#if CJS_X86
    // Most strings of a request are short and plain (keys, roles, model names): when the closing
    // quote is among the next 16 bytes and only printable ASCII other than a backslash comes
    // before it, that is the whole answer. The block loops would first set up their constants.
    if (from < length && length - from >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(bytes + from));
        unsigned quote = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8('"')));
        // A backslash, a control byte (<= 0x1F) or a byte >= 0x80 (the sign bit).
        __m128i special = _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('\\')),
            _mm_cmpeq_epi8(_mm_max_epu8(v, _mm_set1_epi8(0x1F)), _mm_set1_epi8(0x1F)));
        unsigned other = (unsigned)_mm_movemask_epi8(_mm_or_si128(special, v));
        if (quote && (other & ((quote & (0u - quote)) - 1)) == 0) {
            cjs_string_scan plain = {from + (size_t)__builtin_ctz(quote), 0};
            return plain;
        }
    }
#endif
    cjs_scan_fn fn = __atomic_load_n(&cjs_scan_impl, __ATOMIC_RELAXED);
    if (!fn) {
        cjs_scan_fn all[CJS_MAX_IMPLEMENTATIONS];
        cjs_implementations(all);
        fn = all[0];
        __atomic_store_n(&cjs_scan_impl, fn, __ATOMIC_RELAXED);
    }
    return fn(bytes, from, length);
}

size_t cjs_scan_implementation_count(void) {
    cjs_scan_fn all[CJS_MAX_IMPLEMENTATIONS];
    return cjs_implementations(all);
}

cjs_string_scan cjs_scan_string_using(size_t implementation, const uint8_t *bytes, size_t from, size_t length) {
    cjs_scan_fn all[CJS_MAX_IMPLEMENTATIONS];
    size_t n = cjs_implementations(all);
    return all[implementation < n ? implementation : n - 1](bytes, from, length);
}

cjs_string_scan cjs_scan_string_portable(const uint8_t *bytes, size_t from, size_t length) {
    return cjs_scan_scalar(bytes, from, length);
}

size_t cjs_validate_utf8(const uint8_t *bytes, size_t from, size_t end) {
    size_t i = from;
    while (i < end) {
        if (bytes[i] < 0x80) {
            i++;
            continue;
        }
        size_t count = cjs_utf8_sequence(bytes, i, end);
        if (count == 0) return i;
        i += count;
    }
    return end;
}

// Index of the next backslash, quote or control byte in bytes[i..<end], or end.
static inline size_t cjs_next_special(const uint8_t *bytes, size_t i, size_t end) {
#if CJS_X86
    const __m128i backslash = _mm_set1_epi8('\\'), quote = _mm_set1_epi8('"'), x1f = _mm_set1_epi8(0x1F);
    for (; i + 16 <= end; i += 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(bytes + i));
        __m128i hit = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, backslash), _mm_cmpeq_epi8(v, quote)),
            _mm_cmpeq_epi8(_mm_max_epu8(v, x1f), x1f));
        unsigned mask = (unsigned)_mm_movemask_epi8(hit);
        if (mask) return i + (size_t)__builtin_ctz(mask);
    }
#endif
    for (; i < end; i++) {
        uint8_t b = bytes[i];
        if (b == '\\' || b == '"' || b < 0x20) return i;
    }
    return end;
}

// The byte the short escape `\` + `e` stands for (`\" \\ \b \f \n \r \t`, the ones the canonical
// form keeps), or 0 if `e` is no such letter.
static inline uint8_t cjs_short_escape_value(uint8_t e) {
    switch (e) {
    case '"': return '"';
    case '\\': return '\\';
    case 'b': return 0x08;
    case 'f': return 0x0C;
    case 'n': return 0x0A;
    case 'r': return 0x0D;
    case 't': return 0x09;
    default: return 0;
    }
}

// For the canonical form, which keeps the short escapes `\" \\ \b \f \n \r \t` as they are: the
// index of the next control byte, or backslash followed by anything else (`\u`, `\/`, an invalid
// escape), in bytes[i..<end], or end. Such a backslash may be the second half of a `\\`: the
// caller checks the run of backslashes before it.
#if CJS_X86
// The same search, 64 bytes at a time.
__attribute__((target("avx512bw"))) static size_t cjs_next_rewrite_avx512(const uint8_t *bytes, size_t i,
                                                                            size_t end) {
    const __m512i backslash = _mm512_set1_epi8('\\'), x1f = _mm512_set1_epi8(0x1F);
    for (; i + 65 <= end; i += 64) {
        __m512i v = _mm512_loadu_si512((const void *)(bytes + i));
        __m512i w = _mm512_loadu_si512((const void *)(bytes + i + 1));
        __mmask64 kept = _mm512_cmpeq_epi8_mask(w, _mm512_set1_epi8('"')) | _mm512_cmpeq_epi8_mask(w, backslash)
            | _mm512_cmpeq_epi8_mask(w, _mm512_set1_epi8('b')) | _mm512_cmpeq_epi8_mask(w, _mm512_set1_epi8('f'))
            | _mm512_cmpeq_epi8_mask(w, _mm512_set1_epi8('n')) | _mm512_cmpeq_epi8_mask(w, _mm512_set1_epi8('r'))
            | _mm512_cmpeq_epi8_mask(w, _mm512_set1_epi8('t'));
        uint64_t hit = (_mm512_cmpeq_epi8_mask(v, backslash) & ~kept) | _mm512_cmple_epu8_mask(v, x1f);
        if (hit) return i + (size_t)__builtin_ctzll(hit);
    }
    return i;
}

static int cjs_has_avx512 = -1;
#endif

#if CJS_X86
// The rewrite candidates among the 16 bytes at p (bit k: p[k]), reading p[0..<17].
static inline unsigned cjs_rewrite_mask16(const uint8_t *p) {
    const __m128i backslash = _mm_set1_epi8('\\'), x1f = _mm_set1_epi8(0x1F);
    __m128i v = _mm_loadu_si128((const __m128i *)p);
    __m128i w = _mm_loadu_si128((const __m128i *)(p + 1));
    __m128i kept = _mm_or_si128(
        _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(w, _mm_set1_epi8('"')), _mm_cmpeq_epi8(w, backslash)),
            _mm_or_si128(_mm_cmpeq_epi8(w, _mm_set1_epi8('b')), _mm_cmpeq_epi8(w, _mm_set1_epi8('f')))),
        _mm_or_si128(_mm_cmpeq_epi8(w, _mm_set1_epi8('n')),
            _mm_or_si128(_mm_cmpeq_epi8(w, _mm_set1_epi8('r')), _mm_cmpeq_epi8(w, _mm_set1_epi8('t')))));
    __m128i escape = _mm_andnot_si128(kept, _mm_cmpeq_epi8(v, backslash));
    return (unsigned)_mm_movemask_epi8(_mm_or_si128(escape, _mm_cmpeq_epi8(_mm_max_epu8(v, x1f), x1f)));
}
#endif

static inline size_t cjs_next_rewrite(const uint8_t *bytes, size_t i, size_t end) {
#if CJS_X86
    // The next 16 bytes first: escapes often come close together (escaped words, a space, the next).
    if (i + 17 <= end) {
        unsigned mask = cjs_rewrite_mask16(bytes + i);
        if (mask) return i + (size_t)__builtin_ctz(mask);
        i += 16;
    }
    // Chosen once; a race between first callers is benign (both store the same value).
    int avx512 = __atomic_load_n(&cjs_has_avx512, __ATOMIC_RELAXED);
    if (avx512 < 0) {
        __builtin_cpu_init();
        avx512 = __builtin_cpu_supports("avx512bw") != 0;
        __atomic_store_n(&cjs_has_avx512, avx512, __ATOMIC_RELAXED);
    }
    if (avx512) i = cjs_next_rewrite_avx512(bytes, i, end);
    for (; i + 17 <= end; i += 16) {
        unsigned mask = cjs_rewrite_mask16(bytes + i);
        if (mask) return i + (size_t)__builtin_ctz(mask);
    }
#endif
    for (; i < end; i++) {
        uint8_t b = bytes[i];
        if (b < 0x20 || (b == '\\' && (i + 1 >= end || !cjs_short_escape_value(bytes[i + 1])))) return i;
    }
    return end;
}

// A hex digit's value + 1; 0 for any other byte.
static const uint8_t cjs_hex_digit[256] = {
    ['0'] = 1, ['1'] = 2, ['2'] = 3, ['3'] = 4, ['4'] = 5, ['5'] = 6, ['6'] = 7, ['7'] = 8, ['8'] = 9, ['9'] = 10,
    ['a'] = 11, ['b'] = 12, ['c'] = 13, ['d'] = 14, ['e'] = 15, ['f'] = 16,
    ['A'] = 11, ['B'] = 12, ['C'] = 13, ['D'] = 14, ['E'] = 15, ['F'] = 16};

// Four hex digits at bytes[i..<i+4] (the caller checked they exist); -1 and the bad index if not hex.
static inline int32_t cjs_hex4(const uint8_t *bytes, size_t i, size_t *bad) {
    int32_t d0 = cjs_hex_digit[bytes[i]] - 1, d1 = cjs_hex_digit[bytes[i + 1]] - 1;
    int32_t d2 = cjs_hex_digit[bytes[i + 2]] - 1, d3 = cjs_hex_digit[bytes[i + 3]] - 1;
    if ((d0 | d1 | d2 | d3) < 0) {
        size_t k = 0;
        while (cjs_hex_digit[bytes[i + k]]) k++;
        *bad = i + k;
        return -1;
    }
    return d0 << 12 | d1 << 8 | d2 << 4 | d3;
}

__attribute__((always_inline)) static inline size_t cjs_put_utf8(uint8_t *out, uint32_t scalar) {
    if (scalar < 0x80) {
        out[0] = (uint8_t)scalar;
        return 1;
    }
    if (scalar < 0x800) {
        out[0] = (uint8_t)(0xC0 | (scalar >> 6)), out[1] = (uint8_t)(0x80 | (scalar & 0x3F));
        return 2;
    }
    if (scalar < 0x10000) {
        out[0] = (uint8_t)(0xE0 | (scalar >> 12)), out[1] = (uint8_t)(0x80 | ((scalar >> 6) & 0x3F));
        out[2] = (uint8_t)(0x80 | (scalar & 0x3F));
        return 3;
    }
    out[0] = (uint8_t)(0xF0 | (scalar >> 18)), out[1] = (uint8_t)(0x80 | ((scalar >> 12) & 0x3F));
    out[2] = (uint8_t)(0x80 | ((scalar >> 6) & 0x3F)), out[3] = (uint8_t)(0x80 | (scalar & 0x3F));
    return 4;
}

// The single-letter escape of a byte, or 0.
static inline uint8_t cjs_short_escape(uint32_t c) {
    switch (c) {
    case '"': return '"';
    case '\\': return '\\';
    case 0x08: return 'b';
    case 0x0C: return 'f';
    case 0x0A: return 'n';
    case 0x0D: return 'r';
    case 0x09: return 't';
    default: return 0;
    }
}

// One body for both forms; each public entry below passes `decode` as a constant, so the compiler
// drops the other form's branches from the loops.
__attribute__((always_inline)) static inline cjs_canonical_result cjs_rewrite(const uint8_t *bytes, size_t from,
                                                                             size_t end, uint8_t *out, int decode) {
    static const char hex[] = "0123456789abcdef";
    cjs_canonical_result r = {0, CJS_CANONICAL_OK, 0, 0};
    size_t n = 0, run = from, i = from;
#define CJS_FLUSH(upto)                                                                           \
    do {                                                                                          \
        memcpy(out + n, bytes + run, (upto) - run);                                               \
        n += (upto) - run;                                                                        \
    } while (0)
#define CJS_FAIL(kind, index, b)                                                                  \
    do {                                                                                          \
        r.error = (kind), r.at = (index), r.byte = (b);                                           \
        goto done;                                                                                \
    } while (0)
    for (;;) {
        i = decode ? cjs_next_special(bytes, i, end) : cjs_next_rewrite(bytes, i, end);
        if (i >= end || bytes[i] == '"') break;
        uint8_t b = bytes[i];
        if (b < 0x20) CJS_FAIL(CJS_CANONICAL_CONTROL, i, b);
        if (!decode) {
            // The second half of an escaped backslash (an odd run before it) is an ordinary byte.
            size_t k = i;
            while (k > from && bytes[k - 1] == '\\') k--;
            if ((i - k) & 1) {
                i++;
                continue;
            }
        }
        // A backslash.
        if (i + 1 >= end) CJS_FAIL(CJS_CANONICAL_ESCAPE_AT_END, i, b);
        uint8_t e = bytes[i + 1];
        uint8_t value = cjs_short_escape_value(e);
        if (value) {
            if (decode) {
                CJS_FLUSH(i);
                out[n++] = value;
                run = i + 2;
            }
            i += 2;
            continue;
        }
        if (e == '/') {
            CJS_FLUSH(i);
            out[n++] = '/';
            i += 2;
            run = i;
            continue;
        }
        if (e != 'u') CJS_FAIL(CJS_CANONICAL_BAD_ESCAPE, i, e);
        // A run of `\u` escapes (text in a non-Latin script, sent with every character escaped),
        // decoded one after the other without going back to the search.
        CJS_FLUSH(i);
        for (;;) {
            size_t at = i, bad = 0, next = i + 6;
            if (i + 6 > end) CJS_FAIL(CJS_CANONICAL_TRUNCATED_U, at, 'u');
            int32_t scalar = cjs_hex4(bytes, i + 2, &bad);
            if (scalar < 0) CJS_FAIL(CJS_CANONICAL_BAD_HEX, bad, bytes[bad]);
            if (scalar >= 0xD800 && scalar <= 0xDBFF) {
                if (!(next + 6 <= end && bytes[next] == '\\' && bytes[next + 1] == 'u')) CJS_FAIL(CJS_CANONICAL_LONE_HIGH, at, 'u');
                int32_t low = cjs_hex4(bytes, next + 2, &bad);
                if (low < 0) CJS_FAIL(CJS_CANONICAL_BAD_HEX, bad, bytes[bad]);
                if (!(low >= 0xDC00 && low <= 0xDFFF)) CJS_FAIL(CJS_CANONICAL_HIGH_WITHOUT_LOW, at, 'u');
                scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00);
                next += 6;
            } else if (scalar >= 0xDC00 && scalar <= 0xDFFF) {
                CJS_FAIL(CJS_CANONICAL_LONE_LOW, at, 'u');
            }
            uint8_t letter = decode || scalar >= 0x60 ? 0 : cjs_short_escape((uint32_t)scalar);
            if (letter) {
                out[n++] = '\\', out[n++] = letter;
            } else if (!decode && scalar < 0x20) {
                out[n++] = '\\', out[n++] = 'u', out[n++] = '0', out[n++] = '0';
                out[n++] = (uint8_t)hex[scalar >> 4], out[n++] = (uint8_t)hex[scalar & 0xF];
            } else {
                n += cjs_put_utf8(out + n, (uint32_t)scalar);
            }
            i = next;
            // Right after an escape, a backslash is never escaped itself.
            if (!(i + 1 < end && bytes[i] == '\\' && bytes[i + 1] == 'u')) break;
        }
        run = i;
    }
    CJS_FLUSH(i < end ? i : end);
done:
#undef CJS_FLUSH
#undef CJS_FAIL
    r.written = n;
    return r;
}

static cjs_canonical_result cjs_rewrite_canonical(const uint8_t *bytes, size_t from, size_t end, uint8_t *out) {
    return cjs_rewrite(bytes, from, end, out, 0);
}

static cjs_canonical_result cjs_rewrite_decoded(const uint8_t *bytes, size_t from, size_t end, uint8_t *out) {
    return cjs_rewrite(bytes, from, end, out, 1);
}

cjs_canonical_result cjs_canonicalize(const uint8_t *bytes, size_t from, size_t end, uint8_t *out, int decode) {
    return decode ? cjs_rewrite_decoded(bytes, from, end, out) : cjs_rewrite_canonical(bytes, from, end, out);
}
