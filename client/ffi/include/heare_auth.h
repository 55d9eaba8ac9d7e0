/*
 * heare_auth.h — verify an API key with the local heare-authd daemon from C.
 *
 * Link with -lheare_auth (libheare_auth.so or libheare_auth.a; the static library also needs
 * -lpthread -ldl -lm). All functions are thread-safe. No secret is ever stored or logged.
 *
 *   heare_auth_key key;
 *   int status = heare_auth_verify(secret, &key);
 *   if (status == HEARE_AUTH_OK) { use(key.key_id, key.name, key.metadata_json); heare_auth_key_free(&key); }
 *   else fprintf(stderr, "%s\n", heare_auth_strerror(status));
 */
#ifndef HEARE_AUTH_H
#define HEARE_AUTH_H

#ifdef __cplusplus
extern "C" {
#endif

/* Status codes. */
#define HEARE_AUTH_OK                0 /* the key is valid; *out is filled */
#define HEARE_AUTH_INVALID_KEY       1 /* unknown, expired, disabled or rotated-out key */
#define HEARE_AUTH_MALFORMED_KEY     2 /* refused locally: empty, too long, bad checksum */
#define HEARE_AUTH_UNAVAILABLE       3 /* no socket / connection refused: is heare-authd running? */
#define HEARE_AUTH_PERMISSION_DENIED 4 /* not allowed on the socket: join its group */
#define HEARE_AUTH_TIMEOUT           5 /* no answer in time (connecting included: one deadline) */
#define HEARE_AUTH_PROTOCOL_ERROR    6 /* an unexpected answer, or a NUL byte inside a key's id,
                                          name or metadata (never cut short: refused) */
#define HEARE_AUTH_BAD_ARGUMENT      7 /* NULL secret, or not UTF-8 */
#define HEARE_AUTH_INTERNAL_ERROR    8 /* a bug in the library (it never crosses into C as a crash) */
#define HEARE_AUTH_RATE_LIMITED      9 /* the key is over its rate limit (HTTP 429): refused for now,
                                          neither valid nor invalid; try again later */

/* A verified key. Every string is NUL-terminated and owned by the library until
 * heare_auth_key_free(); metadata_json is a JSON object. */
typedef struct heare_auth_key {
    char *key_id;
    char *name;
    char *metadata_json;
} heare_auth_key;

/* Verifies `secret` with the daemon on $HEARE_AUTH_SOCKET, else /run/heare-auth/heare-authd.sock,
 * with a 5 second timeout. `out` may be NULL when only the verdict matters; on any status other
 * than HEARE_AUTH_OK, *out is left zeroed.
 *
 * In a setuid or setgid program (any process whose AT_SECURE auxiliary value is set, the rule of
 * glibc's secure_getenv), $HEARE_AUTH_SOCKET is ignored: the environment is the caller's, and a
 * caller could point it at a server of their own that answers "valid". Such a program always
 * talks to /run/heare-auth/heare-authd.sock, or to the path it passes to heare_auth_verify_at. */
int heare_auth_verify(const char *secret, heare_auth_key *out);

/* The same with an explicit socket path (NULL for the default, chosen as above) and timeout in
 * milliseconds (0 for 5000). The timeout bounds the whole call: connecting (also to a daemon whose
 * listen backlog is full), sending and reading share one deadline, past which the call returns
 * HEARE_AUTH_TIMEOUT. */
int heare_auth_verify_at(const char *socket_path, const char *secret, unsigned int timeout_ms,
                         heare_auth_key *out);

/* Frees the strings of a key filled by heare_auth_verify*(), and zeroes it. NULL is ignored. */
void heare_auth_key_free(heare_auth_key *key);

/* A static, human-readable description of a status code. Never NULL. */
const char *heare_auth_strerror(int status);

#ifdef __cplusplus
}
#endif

#endif /* HEARE_AUTH_H */
