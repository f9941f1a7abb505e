// examples/gz_text.hpp: reads a gzipped (or plain) file whole, for the
// examples that read data/*.gz (the digits, Shakespeare).
#pragma once

#include <zlib.h>

#include <stdexcept>
#include <string>
#include <vector>

namespace examples {

/// The bytes of `path`, decompressed when gzipped.
/// @throws std::runtime_error when it cannot be opened or decompressed.
inline std::string read_gz(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  if (!f) throw std::runtime_error("cannot open " + path);
  std::string text;
  std::vector<char> buf(1 << 20);
  int n;
  while ((n = gzread(f, buf.data(), unsigned(buf.size()))) > 0) text.append(buf.data(), std::size_t(n));
  const bool bad = n < 0;
  gzclose(f);
  if (bad) throw std::runtime_error("cannot decompress " + path);
  return text;
}

}  // namespace examples
