// The cluster's shared secret: a node daemon starts a job only for a driver
// that proves it knows the secret. The proof is HMAC-SHA256(secret, nonce ||
// job) over a fresh nonce the daemon chose, so the secret never crosses the
// network and a recorded request cannot be replayed.
#pragma once

#include "runtime/Status.h"

#include <string>

namespace sbpflow::cluster {

// Reads the secret from `path` (surrounding whitespace dropped). A missing or
// unreadable file, or a secret shorter than 16 bytes, is an error naming it.
StatusOr<std::string> readSecretFile(const std::string &path);

// 32 random bytes from OpenSSL's generator, hex-encoded.
std::string randomNonce();

// HMAC-SHA256 of `message` under `secret`, hex-encoded.
std::string hmacHex(const std::string &secret, const std::string &message);

// Constant-time comparison of two MACs.
bool sameMac(const std::string &a, const std::string &b);

} // namespace sbpflow::cluster
