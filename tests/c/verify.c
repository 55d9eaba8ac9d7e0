/* Compiled by tests/tests/c_abi.rs against include/heare_auth.h and libheare_auth:
 * verify SOCKET SECRET prints "STATUS key_id|name|metadata" or "STATUS strerror". */
#include <stdio.h>
#include "heare_auth.h"

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: verify SOCKET SECRET\n");
        return 64;
    }
    heare_auth_key key;
    int status = heare_auth_verify_at(argv[1], argv[2], 2000, &key);
    if (status == HEARE_AUTH_OK) {
        printf("%d %s|%s|%s\n", status, key.key_id, key.name, key.metadata_json);
        heare_auth_key_free(&key);
        heare_auth_key_free(&key); /* a second free is a no-op */
        if (key.key_id != NULL) return 65;
    } else {
        if (key.key_id != NULL) return 66; /* left zeroed on failure */
        printf("%d %s\n", status, heare_auth_strerror(status));
    }
    if (heare_auth_verify(NULL, NULL) != HEARE_AUTH_BAD_ARGUMENT) return 67;
    if (heare_auth_strerror(12345) == NULL) return 68;
    return status;
}
