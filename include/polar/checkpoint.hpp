// polar/checkpoint.hpp: saving and restoring weights and optimizer states,
// bit for bit.
//
// A checkpoint is a list of named entries: tensors (a backend buffer or a
// matrix view, copied to the host), integers and reals. Every state of
// polar's optimizers (the directions, the Riemannian compositions, manifold
// Muon, the MD gains, SPSA's momentum) lists what it must keep through its
// visit() member; put_state() writes those fields under a name, get_state()
// reads them back into a state made by the optimizer's init() for the same
// shapes. Scratch buffers are not saved. A step after get_state() gives the
// same bits as a step of the run that was saved.
//
// The file format (version 1), all integers little-endian:
//
//   "POLARCKP"  u32 version  u32 entry count  u32 CRC-32 of those 16 bytes
//   each entry:
//     u16 name length, the name (UTF-8),
//     u8 kind (1 tensor, 2 integer, 3 real), u8 scalar code (tensors: 1
//     float, 2 double, 3 IEEE half, 4 bfloat16, 5 other 16-bit; 0
//     otherwise), u8 rank, rank x i64 extents,
//     u64 payload length, the payload (tensor elements in row-major order;
//     an i64; a double's bits),
//     u32 CRC-32 of the entry from its name length to its payload's end
//   "PEND"  u32 CRC-32 of every byte before it
//
// save() writes through a temporary file renamed into place. parse() checks
// the whole-file CRC before anything else, so any change to the bytes
// (a flipped bit, a cut) is reported as a format_error, and then each
// header and entry, naming what is wrong and where. docs/checkpoints.md has
// the details.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include "polar/core/detail/checksum.hpp"
#include "polar/core/error.hpp"
#include "polar/core/view.hpp"

namespace polar {

/// What a checkpoint entry holds.
enum class checkpoint_kind : std::uint8_t {
  tensor = 1,   ///< elements of a scalar type, with extents
  integer = 2,  ///< one signed 64-bit integer (step counts, shapes, enums)
  real = 3      ///< one double
};

namespace detail {

/// The scalar code of T in the format (0 for a type it cannot store).
template <class T>
constexpr std::uint8_t checkpoint_code() {
  if constexpr (std::is_same_v<T, float>) {
    return 1;
  } else if constexpr (std::is_same_v<T, double>) {
    return 2;
  } else if constexpr (sizeof(T) == 2 && std::numeric_limits<T>::is_specialized) {
    return std::numeric_limits<T>::digits == 11 ? 3 : std::numeric_limits<T>::digits == 8 ? 4 : 5;
  } else if constexpr (sizeof(T) == 2) {
    return 5;
  } else {
    return 0;
  }
}

inline const char* checkpoint_code_name(std::uint8_t c) {
  switch (c) {
    case 1: return "float";
    case 2: return "double";
    case 3: return "half";
    case 4: return "bfloat16";
    case 5: return "16-bit";
    default: return "no scalar type";
  }
}

inline std::size_t checkpoint_code_size(std::uint8_t c) { return c == 1 ? 4 : c == 2 ? 8 : c <= 5 && c > 0 ? 2 : 0; }

inline const char* checkpoint_kind_name(checkpoint_kind k) {
  return k == checkpoint_kind::tensor ? "a tensor" : k == checkpoint_kind::integer ? "an integer" : "a real";
}

}  // namespace detail

/// Named tensors, integers and reals, in the order they were put; a binary
/// format with checksums (see the header comment).
class checkpoint {
 public:
  /// The format version serialize() writes and parse() reads.
  static constexpr std::uint32_t version = 1;

  /// One named entry.
  struct entry {
    std::string name;                   ///< unique within the checkpoint
    checkpoint_kind kind{};             ///< what it holds
    std::uint8_t code = 0;              ///< tensors: the scalar type's code
    std::vector<std::int64_t> extents;  ///< tensors: the shape (rank 1 for a buffer)
    std::vector<std::uint8_t> payload;  ///< elements, an i64 or a double's bits, little-endian
  };

  // ---- writing ----------------------------------------------------------------

  /// Puts the elements of w (any layout, any memory space) as a rows x cols
  /// tensor in row-major order.
  /// @throws value_error when the name is empty, too long or already used.
  template <class Backend, class U>
  void put(Backend& be, const std::string& name, matrix_view<U> w) {
    using T = std::remove_const_t<U>;
    static_assert(detail::checkpoint_code<T>() != 0, "polar::checkpoint stores float, double and 16-bit scalars");
    std::vector<T> host(std::size_t(w.rows() * w.cols()));
    if (!host.empty())
      be.copy_to_host(as_const(w), row_major_view(host.data(), w.rows(), w.cols(), -1, memory_space::host));
    put_raw(name, checkpoint_kind::tensor, detail::checkpoint_code<T>(), {w.rows(), w.cols()}, host.data(),
            host.size() * sizeof(T));
  }

  /// Puts an integer.
  void put_integer(const std::string& name, std::int64_t v) {
    std::vector<std::uint8_t> b;
    detail::put_le(b, std::uint64_t(v));
    put_raw(name, checkpoint_kind::integer, 0, {}, b.data(), b.size());
  }

  /// Puts a real.
  void put_real(const std::string& name, double v) {
    std::vector<std::uint8_t> b;
    detail::put_le_double(b, v);
    put_raw(name, checkpoint_kind::real, 0, {}, b.data(), b.size());
  }

  /// Puts what a state must keep (its visit() fields), each under
  /// name + "/" + the field's name.
  template <class Backend, class State>
  void put_state(Backend& be, const std::string& name, const State& s) {
    writer<Backend> w{be, *this, name + "/"};
    // visit() reads through the same member for writing and reading; the
    // writer only reads.
    const_cast<State&>(s).visit(w);
  }

  // ---- reading ----------------------------------------------------------------

  /// Whether an entry of that name exists.
  bool contains(const std::string& name) const { return index_.count(name) != 0; }
  /// The entries, in order.
  const std::vector<entry>& entries() const noexcept { return entries_; }

  /// Copies the tensor `name` into w, which must have its shape and scalar type.
  /// @throws format_error (no such entry, another kind or scalar type),
  ///         shape_error (another shape); w is not written then.
  template <class Backend, class T>
  void get(Backend& be, const std::string& name, matrix_view<T> w) const {
    const entry& e = check("polar::checkpoint::get", name, w);
    std::vector<T> host(std::size_t(w.rows() * w.cols()));
    if (!host.empty()) {
      std::memcpy(host.data(), e.payload.data(), e.payload.size());
      be.copy_from_host(as_const(row_major_view(host.data(), w.rows(), w.cols(), -1, memory_space::host)), w);
    }
  }

  /// Checks, without writing, that get(be, name, w) would succeed; returns the entry.
  /// @throws as get().
  template <class T>
  const entry& check(const char* op, const std::string& name, matrix_view<T> w) const {
    const entry& e = find_tensor<std::remove_const_t<T>>(op, name);
    if (e.extents.size() != 2 || e.extents[0] != w.rows() || e.extents[1] != w.cols())
      detail::raise<shape_error>(op, "the checkpoint's '", name, "' is ", shape_text(e), " but the view is ", w.rows(),
                                 "x", w.cols());
    return e;
  }

  /// The integer `name`.
  /// @throws format_error when there is none.
  std::int64_t get_integer(const std::string& name) const {
    const entry& e = find("polar::checkpoint::get_integer", name, checkpoint_kind::integer);
    return std::int64_t(detail::get_le<std::uint64_t>(e.payload.data()));
  }

  /// The real `name`.
  /// @throws format_error when there is none.
  double get_real(const std::string& name) const {
    const entry& e = find("polar::checkpoint::get_real", name, checkpoint_kind::real);
    return detail::get_le_double(e.payload.data());
  }

  /// Reads what put_state(be, name, ...) wrote into s, a state that the same
  /// optimizer's init() made for the same shapes. Every field is checked
  /// before any is written, so on an error s is unchanged.
  /// @throws format_error (a missing entry, another kind or scalar type),
  ///         shape_error (the state was made for other shapes).
  template <class Backend, class State>
  void get_state(Backend& be, const std::string& name, State& s) const {
    check_state(be, name, s);
    reader<Backend> apply{be, *this, name + "/", true};
    s.visit(apply);
  }
  /// Checks, without writing, that get_state(be, name, s) would succeed.
  /// @throws as get_state().
  template <class Backend, class State>
  void check_state(Backend& be, const std::string& name, State& s) const {
    reader<Backend> dry{be, *this, name + "/", false};
    s.visit(dry);
  }

  // ---- bytes and files ------------------------------------------------------

  /// Adds other's entries to this checkpoint, in their order: those whose
  /// names are new; an entry present in both must be the same (kind, type,
  /// shape, contents), as the counts in the shards of a sharded optimizer's
  /// checkpoint are. Entries whose names begin with `except` (when it is
  /// not empty) are left out. Checks everything before adding anything.
  /// @throws format_error naming an entry that differs.
  void merge(const checkpoint& other, const std::string& except = "") {
    const auto skip = [&](const std::string& name) { return !except.empty() && name.compare(0, except.size(), except) == 0; };
    for (const auto& e : other.entries_) {
      if (skip(e.name)) continue;
      const auto it = index_.find(e.name);
      if (it == index_.end()) continue;
      const entry& mine = entries_[it->second];
      if (mine.kind != e.kind || mine.code != e.code || mine.extents != e.extents || mine.payload != e.payload)
        detail::raise<format_error>("polar::checkpoint::merge", "both checkpoints hold '", e.name,
                                    "' but with different ", mine.kind != e.kind ? "kinds" : "contents");
    }
    for (const auto& e : other.entries_)
      if (!skip(e.name) && !index_.count(e.name)) {
        index_[e.name] = entries_.size();
        entries_.push_back(e);
      }
  }

  /// The checkpoint in the file format.
  std::vector<std::uint8_t> serialize() const {
    std::size_t size = 28;
    for (const entry& e : entries_) size += 2 + e.name.size() + 3 + 8 * e.extents.size() + 8 + e.payload.size() + 4;
    std::vector<std::uint8_t> out(magic, magic + 8);
    out.reserve(size);
    detail::put_le(out, version);
    detail::put_le(out, std::uint32_t(entries_.size()));
    detail::put_le(out, detail::crc32(out.data(), out.size()));
    for (const entry& e : entries_) {
      const std::size_t start = out.size();
      detail::put_le(out, std::uint16_t(e.name.size()));
      out.insert(out.end(), e.name.begin(), e.name.end());
      out.push_back(std::uint8_t(e.kind));
      out.push_back(e.code);
      out.push_back(std::uint8_t(e.extents.size()));
      for (std::int64_t x : e.extents) detail::put_le(out, std::uint64_t(x));
      detail::put_le(out, std::uint64_t(e.payload.size()));
      out.insert(out.end(), e.payload.begin(), e.payload.end());
      detail::put_le(out, detail::crc32(out.data() + start, out.size() - start));
    }
    out.insert(out.end(), trailer, trailer + 4);
    detail::put_le(out, detail::crc32(out.data(), out.size()));
    return out;
  }

  /// Reads the file format.
  /// @throws format_error naming what is wrong and where: a cut or changed
  ///         file (the whole-file checksum), another magic or version, an
  ///         entry's checksum, an impossible length or kind.
  static checkpoint parse(const std::uint8_t* data, std::size_t n) {
    constexpr const char* op = "polar::checkpoint::parse";
    constexpr std::size_t head = 20, tail = 8;
    if (n < head + tail)
      detail::raise<format_error>(op, "the data is ", n, " bytes, shorter than an empty checkpoint (", head + tail,
                                  "): cut short");
    if (std::memcmp(data, magic, 8) != 0)
      detail::raise<format_error>(op, "the data does not start with \"POLARCKP\": not a polar checkpoint");
    if (std::memcmp(data + n - tail, trailer, 4) != 0)
      detail::raise<format_error>(op, "the data does not end with the trailer \"PEND\" and its checksum: cut short or "
                                      "extended (", n, " bytes)");
    const auto total = detail::get_le<std::uint32_t>(data + n - 4);
    const auto computed = detail::crc32(data, n - 4);
    if (total != computed)
      detail::raise<format_error>(op, "the checksum of the whole checkpoint ", detail::hex32(total),
                                  " does not match its ", n, " bytes (", detail::hex32(computed), "): corrupted");
    const auto ver = detail::get_le<std::uint32_t>(data + 8);
    const auto count = detail::get_le<std::uint32_t>(data + 12);
    if (detail::get_le<std::uint32_t>(data + 16) != detail::crc32(data, 16))
      detail::raise<format_error>(op, "the header's checksum does not match");
    if (ver != version)
      detail::raise<format_error>(op, "the checkpoint has format version ", ver, "; this build reads version ",
                                  version);
    checkpoint ck;
    std::size_t p = head;
    const std::size_t end = n - tail;
    for (std::uint32_t k = 0; k < count; ++k) {
      const std::size_t start = p;
      const auto need = [&](std::size_t bytes, const char* what) {
        if (bytes > end - p)
          detail::raise<format_error>(op, "entry ", k, " of ", count, " is cut short at byte ", p, " (reading ", what,
                                      ")");
      };
      need(2, "the name's length");
      const auto len = detail::get_le<std::uint16_t>(data + p);
      p += 2;
      need(len, "the name");
      entry e;
      e.name.assign(reinterpret_cast<const char*>(data + p), len);
      p += len;
      need(3, "the kind, scalar code and rank");
      const std::uint8_t kind = data[p], code = data[p + 1], rank = data[p + 2];
      p += 3;
      if (kind < 1 || kind > 3)
        detail::raise<format_error>(op, "entry '", e.name, "' has kind ", int(kind), " (1 to 3 are defined)");
      e.kind = checkpoint_kind(kind);
      e.code = code;
      if (e.kind != checkpoint_kind::tensor && (code != 0 || rank != 0))
        detail::raise<format_error>(op, "entry '", e.name, "' is ", detail::checkpoint_kind_name(e.kind),
                                    " with scalar code ", int(code), " and rank ", int(rank),
                                    "; integers and reals have neither (0 and 0)");
      if (e.kind == checkpoint_kind::tensor && detail::checkpoint_code_size(code) == 0)
        detail::raise<format_error>(op, "entry '", e.name, "' is a tensor of scalar code ", int(code),
                                    " (1 to 5 are defined)");
      need(std::size_t(rank) * 8, "the extents");
      std::uint64_t elements = 1;
      for (int d = 0; d < rank; ++d) {
        const auto x = std::int64_t(detail::get_le<std::uint64_t>(data + p));
        p += 8;
        // The payload's byte count, elements times the scalar's size, must fit too.
        const std::uint64_t cap = std::numeric_limits<std::uint64_t>::max() / detail::checkpoint_code_size(code);
        if (x < 0 || (x > 0 && elements > cap / std::uint64_t(x)))
          detail::raise<format_error>(op, "entry '", e.name, "' has an impossible extent ", x);
        elements *= std::uint64_t(x);
        e.extents.push_back(x);
      }
      need(8, "the payload's length");
      const auto bytes = detail::get_le<std::uint64_t>(data + p);
      p += 8;
      need(std::size_t(bytes), "the payload");
      const std::uint64_t expect = e.kind == checkpoint_kind::tensor ? elements * detail::checkpoint_code_size(code) : 8;
      if (bytes != expect)
        detail::raise<format_error>(op, "entry '", e.name, "' (", detail::checkpoint_kind_name(e.kind), ", ",
                                    detail::checkpoint_code_name(code), ", ", elements, " elements) has ", bytes,
                                    " bytes of payload, not ", expect);
      e.payload.assign(data + p, data + p + bytes);
      p += std::size_t(bytes);
      need(4, "the entry's checksum");
      const auto crc = detail::get_le<std::uint32_t>(data + p);
      if (crc != detail::crc32(data + start, p - start))
        detail::raise<format_error>(op, "the checksum of entry '", e.name, "' does not match");
      p += 4;
      if (ck.index_.count(e.name)) detail::raise<format_error>(op, "entry '", e.name, "' appears twice");
      ck.index_[e.name] = ck.entries_.size();
      ck.entries_.push_back(std::move(e));
    }
    if (p != end)
      detail::raise<format_error>(op, end - p, " bytes follow the last of the ", count, " entries");
    return ck;
  }
  /// parse() over a whole vector.
  static checkpoint parse(const std::vector<std::uint8_t>& bytes) { return parse(bytes.data(), bytes.size()); }

  /// Writes the checkpoint to path through a temporary file renamed into
  /// place: a crash mid-write never leaves half a checkpoint under the name.
  /// @throws format_error when the file cannot be written.
  void save(const std::string& path) const {
    detail::write_file_atomically("polar::checkpoint::save", path, serialize());
  }
  /// Reads a file written by save().
  /// @throws format_error as parse(), or when the file cannot be read.
  static checkpoint load(const std::string& path) {
    return parse(detail::read_file("polar::checkpoint::load", path));
  }

 private:
  static constexpr char magic[9] = "POLARCKP";
  static constexpr char trailer[5] = "PEND";

  // What states' visit() members call, writing.
  template <class Backend>
  struct writer {
    Backend& be;
    checkpoint& ck;
    std::string prefix;
    template <class Buffer>
    void buffer(const char* name, Buffer& b) {
      using T = std::remove_pointer_t<decltype(b.data())>;
      ck.put(be, prefix + name, row_major_view(static_cast<const T*>(b.data()), 1, index(b.size()), -1, Backend::space));
    }
    template <class Buffer>
    void buffers(const char* name, std::vector<Buffer>& bs) {
      ck.put_integer(prefix + name + "/count", std::int64_t(bs.size()));
      for (std::size_t i = 0; i < bs.size(); ++i) buffer((std::string(name) + "/" + std::to_string(i)).c_str(), bs[i]);
    }
    template <class V>
    void shape(const char* name, V& v) {
      ck.put_integer(prefix + name, std::int64_t(v));
    }
    template <class V>
    void value(const char* name, V& v) {
      if constexpr (std::is_floating_point_v<V>)
        ck.put_real(prefix + name, double(v));
      else
        ck.put_integer(prefix + name, std::int64_t(v));
    }
    template <class S>
    void nested(const char* name, S& s) {
      writer sub{be, ck, prefix + name + "/"};
      s.visit(sub);
    }
  };

  // Reading: a first pass checks every field (apply = false), the second
  // writes them.
  template <class Backend>
  struct reader {
    Backend& be;
    const checkpoint& ck;
    std::string prefix;
    bool apply;
    template <class Buffer>
    void buffer(const char* name, Buffer& b) {
      using T = std::remove_pointer_t<decltype(b.data())>;
      const std::string full = prefix + name;
      const entry& e = ck.find_tensor<T>("polar::checkpoint::get_state", full);
      if (e.extents.size() != 2 || e.extents[0] != 1 || e.extents[1] != std::int64_t(b.size()))
        detail::raise<shape_error>("polar::checkpoint::get_state", "the checkpoint's '", full, "' is ", shape_text(e),
                                   " but the state's buffer holds ", b.size(),
                                   " elements: the state was made for other shapes");
      if (apply) ck.get(be, full, row_major_view(b.data(), 1, index(b.size()), -1, Backend::space));
    }
    template <class Buffer>
    void buffers(const char* name, std::vector<Buffer>& bs) {
      const std::string full = prefix + name + "/count";
      const auto n = ck.get_integer(full);
      if (n != std::int64_t(bs.size()))
        detail::raise<shape_error>("polar::checkpoint::get_state", "the checkpoint's '", full, "' is ", n,
                                   " but the state has ", bs.size(), ": the state was made for other tensors");
      for (std::size_t i = 0; i < bs.size(); ++i) buffer((std::string(name) + "/" + std::to_string(i)).c_str(), bs[i]);
    }
    template <class V>
    void shape(const char* name, V& v) {
      const std::string full = prefix + name;
      const auto saved = ck.get_integer(full);
      if (saved != std::int64_t(v))
        detail::raise<shape_error>("polar::checkpoint::get_state", "the checkpoint's '", full, "' is ", saved,
                                   " but the state's is ", std::int64_t(v), ": the state was made for other shapes");
    }
    template <class V>
    void value(const char* name, V& v) {
      const std::string full = prefix + name;
      if constexpr (std::is_floating_point_v<V>) {
        const double x = ck.get_real(full);
        if (apply) v = V(x);
      } else {
        const auto x = ck.get_integer(full);
        if (apply) v = V(x);
      }
    }
    template <class S>
    void nested(const char* name, S& s) {
      reader sub{be, ck, prefix + name + "/", apply};
      s.visit(sub);
    }
  };

  void put_raw(const std::string& name, checkpoint_kind kind, std::uint8_t code, std::vector<std::int64_t> extents,
               const void* data, std::size_t bytes) {
    constexpr const char* op = "polar::checkpoint::put";
    if (name.empty() || name.size() > 65535)
      detail::raise<value_error>(op, "an entry's name must have 1 to 65535 bytes, got ", name.size());
    if (index_.count(name)) detail::raise<value_error>(op, "the checkpoint already has an entry '", name, "'");
    entry e;
    e.name = name;
    e.kind = kind;
    e.code = code;
    e.extents = std::move(extents);
    const auto* p = static_cast<const std::uint8_t*>(data);
    e.payload.assign(p, p + bytes);
    index_[name] = entries_.size();
    entries_.push_back(std::move(e));
  }

  const entry& find(const char* op, const std::string& name, checkpoint_kind kind) const {
    const auto it = index_.find(name);
    if (it == index_.end()) detail::raise<format_error>(op, "the checkpoint has no entry '", name, "'");
    const entry& e = entries_[it->second];
    if (e.kind != kind)
      detail::raise<format_error>(op, "the checkpoint's '", name, "' is ", detail::checkpoint_kind_name(e.kind), ", not ",
                                  detail::checkpoint_kind_name(kind));
    return e;
  }

  template <class T>
  const entry& find_tensor(const char* op, const std::string& name) const {
    const entry& e = find(op, name, checkpoint_kind::tensor);
    if (e.code != detail::checkpoint_code<T>())
      detail::raise<format_error>(op, "the checkpoint's '", name, "' holds ", detail::checkpoint_code_name(e.code),
                                  " elements, not ", detail::checkpoint_code_name(detail::checkpoint_code<T>()));
    return e;
  }

  static std::string shape_text(const entry& e) {
    std::string s;
    for (std::size_t d = 0; d < e.extents.size(); ++d) s += (d ? "x" : "") + std::to_string(e.extents[d]);
    return s.empty() ? "a scalar" : s;
  }

  std::vector<entry> entries_;
  std::unordered_map<std::string, std::size_t> index_;
};

}  // namespace polar
