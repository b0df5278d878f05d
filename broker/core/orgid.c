/* orgid.c — validation and normalisation of Salesforce organization ids.
 *
 * Owns: the case-safe checksum. A 15-character id is case-sensitive and must start
 * with exactly "00D". An 18-character id is read case-insensitively: its 3-character
 * suffix says, for each 5-character chunk, which positions are upper-case letters
 * (bit j of the chunk's suffix value set <=> character j is A-Z), so the canonical
 * case is restored from it. A suffix that marks a digit as upper case, or that is not
 * in the suffix alphabet, is inconsistent and rejected. After restoring, the id must
 * start with "00D". The output is always the canonical 18-character form with an
 * upper-case suffix.
 * Never: accepts an id that another spelling would normalise differently.
 * Tested by: tests/unit/test_orgid.c and tests/fuzz/fuzz_orgid.c (which also checks
 * that normalising is idempotent and that 15 and 18 forms agree). */
#include "orgid.h"

#include <string.h>

#define ORGID_SHORT_LEN 15
#define ORGID_CHUNK_LEN 5
#define ORGID_CHUNKS 3

static const char SUFFIX_ALPHABET[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";

static int is_upper(char c) { return c >= 'A' && c <= 'Z'; }
static int is_lower(char c) { return c >= 'a' && c <= 'z'; }
static int is_digit(char c) { return c >= '0' && c <= '9'; }
static int is_alnum(char c) { return is_upper(c) || is_lower(c) || is_digit(c); }

/* The three suffix characters of a canonical 15-character id. */
static void orgid_suffix(const char id[ORGID_SHORT_LEN], char suffix[ORGID_CHUNKS])
{
    int chunk, j;

    for (chunk = 0; chunk < ORGID_CHUNKS; chunk++) {
        unsigned mask = 0;
        for (j = 0; j < ORGID_CHUNK_LEN; j++)
            if (is_upper(id[chunk * ORGID_CHUNK_LEN + j]))
                mask |= 1u << j;
        suffix[chunk] = SUFFIX_ALPHABET[mask];
    }
}

/* Index of suffix character c (either case) in SUFFIX_ALPHABET, or -1. */
static int suffix_value(char c)
{
    if (is_lower(c))
        c = (char)(c - 'a' + 'A');
    if (is_upper(c))
        return c - 'A';
    if (c >= '0' && c <= '5')
        return 26 + (c - '0');
    return -1;
}

/* Restore the canonical case of in[0..15) from an 18-character suffix into out.
 * Returns -1 when the suffix is malformed or marks a digit as upper case. */
static int restore_case(const char *in, const char *suffix, char *out)
{
    int chunk, j;

    for (chunk = 0; chunk < ORGID_CHUNKS; chunk++) {
        int mask = suffix_value(suffix[chunk]);
        if (mask < 0)
            return -1;
        for (j = 0; j < ORGID_CHUNK_LEN; j++) {
            char c = in[chunk * ORGID_CHUNK_LEN + j];
            int upper = (mask >> j) & 1;
            if (is_digit(c)) {
                if (upper)
                    return -1;
            } else if (upper) {
                c = is_lower(c) ? (char)(c - 'a' + 'A') : c;
            } else {
                c = is_upper(c) ? (char)(c - 'A' + 'a') : c;
            }
            out[chunk * ORGID_CHUNK_LEN + j] = c;
        }
    }
    return 0;
}

int orgid_normalize(const char *in, size_t len, char out[ORGID_LEN + 1])
{
    char canon[ORGID_SHORT_LEN];
    size_t i;

    if (in == NULL || (len != ORGID_SHORT_LEN && len != ORGID_LEN))
        return -1;
    for (i = 0; i < len; i++)
        if (!is_alnum(in[i]))
            return -1;
    if (len == ORGID_LEN) {
        if (restore_case(in, in + ORGID_SHORT_LEN, canon) != 0)
            return -1;
    } else {
        memcpy(canon, in, ORGID_SHORT_LEN);
    }
    if (memcmp(canon, "00D", 3) != 0)
        return -1;
    memcpy(out, canon, ORGID_SHORT_LEN);
    orgid_suffix(canon, out + ORGID_SHORT_LEN);
    out[ORGID_LEN] = '\0';
    return 0;
}
