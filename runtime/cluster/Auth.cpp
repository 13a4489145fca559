#include "runtime/cluster/Auth.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <fstream>
#include <sstream>
#include <stdexcept>

namespace sbpflow::cluster {
namespace {

std::string hex(const unsigned char *bytes, size_t n) {
  static const char *digits = "0123456789abcdef";
  std::string out(2 * n, '0');
  for (size_t i = 0; i < n; ++i) {
    out[2 * i] = digits[bytes[i] >> 4];
    out[2 * i + 1] = digits[bytes[i] & 15];
  }
  return out;
}

} // namespace

StatusOr<std::string> readSecretFile(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return Status::error("cannot read the secret file '" + path + "'");
  std::stringstream buf;
  buf << in.rdbuf();
  std::string secret = buf.str();
  const char *space = " \t\r\n";
  secret.erase(0, secret.find_first_not_of(space));
  auto end = secret.find_last_not_of(space);
  secret.erase(end == std::string::npos ? 0 : end + 1);
  if (secret.size() < 16)
    return Status::error("the secret in '" + path + "' is " + std::to_string(secret.size()) +
                         " bytes; use at least 16 (e.g. openssl rand -hex 32 > FILE)");
  return secret;
}

std::string randomNonce() {
  unsigned char bytes[32];
  if (RAND_bytes(bytes, sizeof(bytes)) != 1)
    throw std::runtime_error("OpenSSL's random generator failed");
  return hex(bytes, sizeof(bytes));
}

std::string hmacHex(const std::string &secret, const std::string &message) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
       reinterpret_cast<const unsigned char *>(message.data()), message.size(), mac, &len);
  return hex(mac, len);
}

bool sameMac(const std::string &a, const std::string &b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

} // namespace sbpflow::cluster
