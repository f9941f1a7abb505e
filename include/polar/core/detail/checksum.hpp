// polar/core/detail/checksum.hpp: CRC-32 (the IEEE 802.3 polynomial, as zlib
// and PNG use it), little-endian encoding of integers and doubles, and whole
// files written through a temporary renamed into place, for polar's binary
// formats (the byte log of decentralized SPSA, checkpoints). Not for users.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "polar/core/error.hpp"

namespace polar::detail {

inline const std::array<std::uint32_t, 256>& crc32_table() noexcept {
  static const std::array<std::uint32_t, 256> table = [] {
    std::array<std::uint32_t, 256> t{};
    for (std::uint32_t i = 0; i < 256; ++i) {
      std::uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1u) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  return table;
}

/// CRC-32 of n bytes; crc32("123456789") is 0xCBF43926.
inline std::uint32_t crc32(const std::uint8_t* p, std::size_t n) noexcept {
  const auto& t = crc32_table();
  std::uint32_t c = 0xFFFFFFFFu;
  for (std::size_t i = 0; i < n; ++i) c = t[(c ^ p[i]) & 0xFFu] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

/// Appends v to out, least significant byte first.
template <class U>
void put_le(std::vector<std::uint8_t>& out, U v) {
  for (std::size_t i = 0; i < sizeof(U); ++i) out.push_back(std::uint8_t(std::uint64_t(v) >> (8 * i)));
}
inline void put_le_double(std::vector<std::uint8_t>& out, double v) {
  std::uint64_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  put_le(out, bits);
}
/// Reads a U stored least significant byte first at p.
template <class U>
U get_le(const std::uint8_t* p) noexcept {
  std::uint64_t v = 0;
  for (std::size_t i = 0; i < sizeof(U); ++i) v |= std::uint64_t(p[i]) << (8 * i);
  return U(v);
}
inline double get_le_double(const std::uint8_t* p) noexcept {
  const auto bits = get_le<std::uint64_t>(p);
  double v;
  std::memcpy(&v, &bits, sizeof v);
  return v;
}

/// "0x" and eight hex digits, for messages.
inline std::string hex32(std::uint32_t v) {
  char buf[11];
  std::snprintf(buf, sizeof buf, "0x%08x", unsigned(v));
  return buf;
}

/// Writes bytes to path through path + ".tmp", renamed into place, so that a
/// crash mid-write never leaves a partial file under the real name.
/// @throws format_error (naming op) when the file cannot be written.
inline void write_file_atomically(const char* op, const std::string& path, const std::vector<std::uint8_t>& bytes) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    f.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
    f.flush();
    if (!f) {
      std::remove(tmp.c_str());
      raise<format_error>(op, "cannot write ", tmp);
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    raise<format_error>(op, "cannot rename ", tmp, " to ", path);
  }
}

/// The whole file at path.
/// @throws format_error (naming op) when it cannot be opened or read.
inline std::vector<std::uint8_t> read_file(const char* op, const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) raise<format_error>(op, "cannot open ", path);
  std::vector<std::uint8_t> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  if (f.bad()) raise<format_error>(op, "cannot read ", path);
  return bytes;
}

}  // namespace polar::detail
