// fuzz/checkpoint.cpp: libFuzzer harness for polar::checkpoint::parse and
// what reads a parsed checkpoint (get, get_integer, get_real, get_state).
//
// Each input is tried twice: as it is, and "repaired", with the header's,
// every entry's and the whole file's CRC-32 recomputed over the bytes as
// they are. Random bytes almost never carry valid checksums, so without the
// repair the fuzzer would only ever meet the first check; with it, every
// length, kind, rank, extent and scalar code the fuzzer invents reaches the
// parser's later checks.
//
// What must hold, for any bytes:
//   - parse either returns or throws polar::format_error (anything else, a
//     crash or a sanitizer report is a finding);
//   - a parsed checkpoint serializes to exactly the bytes it came from;
//   - each tensor entry's payload is its extents' product times its scalar
//     size;
//   - reading any entry into a host buffer of its own shape works, into a
//     wrong shape throws shape_error and writes nothing;
//   - get_state into an AdamW state either works or throws a polar::error
//     and leaves the state's bytes as they were.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "polar/backend/eigen.hpp"
#include "polar/checkpoint.hpp"
#include "polar/direction/adamw.hpp"

namespace {

[[noreturn]] void finding(const char* what) {
  std::fprintf(stderr, "fuzz/checkpoint: %s\n", what);
  std::abort();
}

// Recomputes the checksums over the bytes as they are, walking the entries
// as far as their lengths allow (the layout is in polar/checkpoint.hpp).
std::vector<std::uint8_t> repair(const std::uint8_t* data, std::size_t n) {
  std::vector<std::uint8_t> b(data, data + n);
  constexpr std::size_t head = 20, tail = 8;
  if (n < head + tail) return b;
  const auto put32 = [&](std::size_t at, std::uint32_t v) {
    for (int k = 0; k < 4; ++k) b[at + k] = std::uint8_t(v >> (8 * k));
  };
  std::memcpy(b.data(), "POLARCKP", 8);
  put32(16, polar::detail::crc32(b.data(), 16));
  const std::size_t end = n - tail;
  std::size_t p = head;
  const auto count = polar::detail::get_le<std::uint32_t>(b.data() + 12);
  for (std::uint32_t k = 0; k < count; ++k) {
    const std::size_t start = p;
    if (end - p < 2) break;
    p += 2 + polar::detail::get_le<std::uint16_t>(b.data() + p);
    if (p > end || end - p < 3) break;
    const std::size_t rank = b[p + 2];
    p += 3;
    if ((end - p) / 8 < rank + 1) break;
    p += 8 * rank;
    const auto bytes = polar::detail::get_le<std::uint64_t>(b.data() + p);
    p += 8;
    if (bytes > end - p || end - p - bytes < 4) break;
    p += std::size_t(bytes);
    put32(p, polar::detail::crc32(b.data() + start, p - start));
    p += 4;
  }
  std::memcpy(b.data() + end, "PEND", 4);
  put32(n - 4, polar::detail::crc32(b.data(), n - 4));
  return b;
}

template <class T>
void read_tensor(const polar::checkpoint& ck, const polar::checkpoint::entry& e) {
  polar::backend::eigen be;
  std::uint64_t elements = 1;
  for (auto x : e.extents)
    if (__builtin_mul_overflow(elements, std::uint64_t(x), &elements)) finding("extents overflow yet parsed");
  if (elements * sizeof(T) != e.payload.size()) finding("payload size is not the extents' product");
  if (e.extents.size() != 2) return;  // get() reads matrices; states read buffers (rank 1)
  const auto rows = polar::index(e.extents[0]), cols = polar::index(e.extents[1]);
  std::vector<T> w(elements + 1, T(7));
  ck.get(be, e.name, polar::matrix_view<T>(w.data(), rows, cols, cols, 1));
  if (!e.payload.empty() && std::memcmp(w.data(), e.payload.data(), e.payload.size()) != 0)
    finding("get copied other bytes");
  if (w.back() != T(7)) finding("get wrote past the tensor");
  // A wrong shape: one more row. Nothing may be written. An empty tensor
  // may have one huge extent (0 x 2^40 is a valid shape that holds no
  // bytes); one more row of it would not fit in memory, so it is tried
  // as 1 x 1 instead, which is as wrong.
  polar::index wrong_rows = rows + 1, wrong_cols = cols;
  if (cols > (polar::index(1) << 20)) wrong_rows = wrong_cols = 1;
  std::vector<T> v(std::size_t(wrong_rows) * std::size_t(wrong_cols) + 1, T(5));
  try {
    ck.get(be, e.name, polar::matrix_view<T>(v.data(), wrong_rows, wrong_cols, wrong_cols, 1));
    finding("get into a wrong shape did not throw");
  } catch (const polar::shape_error&) {
  }
  for (T x : v)
    if (x != T(5)) finding("a failed get wrote");
}

void exercise(const std::vector<std::uint8_t>& bytes) {
  polar::checkpoint ck;
  try {
    ck = polar::checkpoint::parse(bytes);
  } catch (const polar::format_error&) {
    return;
  }
  if (ck.serialize() != bytes) finding("serialize(parse(bytes)) differs from bytes");
  for (const auto& e : ck.entries()) {
    switch (e.kind) {
      case polar::checkpoint_kind::tensor:
        if (e.code == polar::detail::checkpoint_code<float>()) read_tensor<float>(ck, e);
        if (e.code == polar::detail::checkpoint_code<double>()) read_tensor<double>(ck, e);
        break;
      case polar::checkpoint_kind::integer:
        (void)ck.get_integer(e.name);
        break;
      case polar::checkpoint_kind::real:
        (void)ck.get_real(e.name);
        break;
    }
  }
  // Whatever the checkpoint holds under "s", loading it into an AdamW state
  // either works or changes nothing.
  polar::backend::eigen be;
  std::vector<float> w(6, 1.0f);
  polar::adamw_direction opt;
  auto s = opt.init(be, polar::matrix_view<float>(w.data(), 2, 3, 3, 1));
  polar::checkpoint before;
  before.put_state(be, "s", s);
  try {
    ck.get_state(be, "s", s);
  } catch (const polar::error&) {
    polar::checkpoint after;
    after.put_state(be, "s", s);
    if (after.serialize() != before.serialize()) finding("a failed get_state changed the state");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t n) {
  exercise(std::vector<std::uint8_t>(data, data + n));
  exercise(repair(data, n));
  return 0;
}
