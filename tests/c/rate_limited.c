/* Compiled by tests/tests/c_abi.rs against include/heare_auth.h and libheare_auth:
 * rate_limited SOCKET SECRET verifies SECRET twice, for a key limited to one verification at a
 * time, and prints "FIRST SECOND strerror(SECOND)". Exit 0 only when the first is HEARE_AUTH_OK
 * and the second HEARE_AUTH_RATE_LIMITED with the key left zeroed; otherwise the failing step. */
#include <stdio.h>
#include "heare_auth.h"

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: rate_limited SOCKET SECRET\n");
        return 64;
    }
    heare_auth_key key;
    int first = heare_auth_verify_at(argv[1], argv[2], 2000, &key);
    if (first == HEARE_AUTH_OK) heare_auth_key_free(&key);
    int second = heare_auth_verify_at(argv[1], argv[2], 2000, &key);
    printf("%d %d %s\n", first, second, heare_auth_strerror(second));
    if (first != HEARE_AUTH_OK) return 1;
    if (second == HEARE_AUTH_OK) {
        heare_auth_key_free(&key);
        return 2;
    }
    if (second == HEARE_AUTH_INVALID_KEY) return 3;
    if (second != HEARE_AUTH_RATE_LIMITED) return 4;
    if (key.key_id != NULL || key.name != NULL || key.metadata_json != NULL) return 5;
    return 0;
}
