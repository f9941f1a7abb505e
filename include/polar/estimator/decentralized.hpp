// polar/estimator/decentralized.hpp: many machines train one model with
// SPSA, each publishing one byte per step.
//
// A step k of a decentralized run, on every live machine m:
//
//   1. propose: estimate the projected gradient q_m at the current weights
//      theta_k along z_m, the perturbation under the key (seed, m, k, 0),
//      restoring theta_k bit for bit (spsa_restore::exact: each machine
//      perturbs along its own z, so in-place restores would drift apart);
//      publish the byte b_m = code.encode(q_m);
//   2. apply: receive every live machine's (m, b_m) and, in increasing
//      order of m, theta <- theta - (lr / n) decode(b_m) z_m, n the number
//      of machines that published, each z_m regenerated from its key.
//
// Every replica applies the same operations to the same bits in the same
// order, so the replicas stay bit-identical; the byte is all that travels.
// A machine may join or leave between steps. A step's records go into a
// byte_log; weights at step s (a checkpoint) plus the log from s reproduce
// the weights at the log's end bit for bit, which is how a late machine
// catches up (decentralized_spsa::catch_up, replay).
//
// Transports (dist/loopback.hpp, dist/mpi.hpp) carry the bytes; one has
//
//   std::vector<byte_record> exchange(std::uint32_t step, std::uint32_t machine,
//                                     std::uint8_t byte);
//
// which publishes this machine's byte (byte_code::absent: none this step)
// and returns the step's records of every machine that published one, in
// increasing order of machine.
//
// Byte log format (little-endian), version 1:
//   header  "POLARLOG", u32 version, u64 seed, f64 epsilon, f64 lr,
//           u8 distribution, u8 difference, u8 code kind, u8 steps per nat,
//           f64 code parameter, u32 first step, u32 CRC-32 of the header;
//   steps   per step: u32 step, u32 count, count x (u32 machine, u8 byte),
//           u32 CRC-32 of the step's block;
//   trailer "LEND", u32 number of steps, u32 CRC-32 of everything before it.
#pragma once

#include <cstdint>
#include <cstdio>
#include <exception>
#include <fstream>
#include <iterator>
#include <string>
#include <utility>
#include <vector>

#include "polar/core/detail/checksum.hpp"
#include "polar/core/error.hpp"
#include "polar/core/random.hpp"
#include "polar/estimator/byte_code.hpp"
#include "polar/estimator/spsa.hpp"

namespace polar {

/// One machine's byte in one step.
struct byte_record {
  std::uint32_t machine = 0;  ///< the machine that proposed it
  std::uint8_t byte = 0;  ///< its code (byte_code::absent: no update)
  /// Same machine and byte.
  friend bool operator==(const byte_record& a, const byte_record& b) noexcept {
    return a.machine == b.machine && a.byte == b.byte;
  }
  /// Not ==.
  friend bool operator!=(const byte_record& a, const byte_record& b) noexcept { return !(a == b); }
};

/// What every machine of a decentralized run agrees on (the byte log's
/// header). A plain aggregate.
struct shared_spsa {
  std::uint64_t seed = 0;                                    ///< of every perturbation
  double epsilon = 1e-3;                                     ///< perturbation size
  double lr = 1e-3;                                          ///< constant learning rate
  distribution dist = distribution::normal;                  ///< of z: normal or rademacher
  spsa_difference difference = spsa_difference::two_sided;  ///< two- or one-sided quotients
  byte_code code = byte_code::logarithmic();  ///< how a projected gradient becomes a byte

  /// Throws value_error for values out of range.
  void check(const char* op = "polar::shared_spsa") const {
    estimator(0).check(op);
    detail::check_lr(op, lr);
  }
  /// Machine m's estimator: one sample, exact restore.
  spsa estimator(std::uint32_t machine) const {
    spsa s;
    s.epsilon = epsilon;
    s.samples = 1;
    s.difference = difference;
    s.dist = dist;
    s.restore = spsa_restore::exact;
    s.seed = seed;
    s.machine = machine;
    return s;
  }
  /// Every setting equal (logs and replicas must agree on all of them).
  friend bool operator==(const shared_spsa& a, const shared_spsa& b) noexcept {
    return a.seed == b.seed && a.epsilon == b.epsilon && a.lr == b.lr && a.dist == b.dist &&
           a.difference == b.difference && a.code == b.code;
  }
};

namespace detail {

// Records of one step must name each machine once, in increasing order, and
// carry a value.
template <class E>
void check_records(const char* op, std::uint32_t step, const byte_record* r, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) {
    if (r[i].byte == byte_code::absent)
      raise<E>(op, "machine ", r[i].machine, " has byte 0x80 (absent) among the records of step ", step);
    if (i == 0) continue;
    if (r[i].machine == r[i - 1].machine)
      raise<E>(op, "machine ", r[i].machine, " appears twice at step ", step);
    if (r[i].machine < r[i - 1].machine)
      raise<E>(op, "machine ", r[i].machine, " follows machine ", r[i - 1].machine, " at step ", step,
               ": records must be in increasing order of machine");
  }
}

}  // namespace detail

/// The record of a decentralized run from a step on: its shared settings
/// and every step's (machine, byte) records. With the weights at
/// first_step() it reproduces the weights at end_step() bit for bit.
class byte_log {
 public:
  static constexpr std::uint32_t version = 1;  ///< the format version serialize() writes

  byte_log() = default;
  /// An empty log of the steps from first_step on, under config.
  byte_log(const shared_spsa& config, std::uint32_t first_step) : config_(config), first_(first_step) {}

  /// The settings every step of the log used.
  const shared_spsa& config() const noexcept { return config_; }
  /// The step of the log's first entry.
  std::uint32_t first_step() const noexcept { return first_; }
  /// One past the last step recorded.
  std::uint32_t end_step() const noexcept { return first_ + std::uint32_t(steps()); }
  /// The number of steps recorded.
  std::size_t steps() const noexcept { return start_.size() - 1; }
  /// Records over all steps.
  std::size_t size() const noexcept { return records_.size(); }

  /// The records of step s, first_step() <= s < end_step().
  std::vector<byte_record> records(std::uint32_t s) const {
    if (s < first_ || s >= end_step())
      detail::raise<value_error>("polar::byte_log::records", "step ", s, " is not in the log (steps ", first_, " to ",
                                 std::int64_t(end_step()) - 1, ")");
    const std::size_t k = s - first_;
    return {records_.begin() + std::ptrdiff_t(start_[k]), records_.begin() + std::ptrdiff_t(start_[k + 1])};
  }

  /// Appends step `step`, which must be end_step().
  /// @throws format_error for a gap, a duplicate step, or records out of
  ///         order, duplicated or absent (naming the step and machine).
  void append(std::uint32_t step, const std::vector<byte_record>& r) {
    constexpr const char* op = "polar::byte_log::append";
    check_next(op, step);
    detail::check_records<format_error>(op, step, r.data(), r.size());
    records_.insert(records_.end(), r.begin(), r.end());
    start_.push_back(records_.size());
  }

  /// The log from step s on (the part a checkpoint at step s needs).
  byte_log since(std::uint32_t s) const {
    if (s < first_ || s > end_step())
      detail::raise<value_error>("polar::byte_log::since", "step ", s, " is outside the log's steps ", first_, " to ",
                                 end_step());
    byte_log out(config_, s);
    for (std::uint32_t t = s; t < end_step(); ++t) out.append(t, records(t));
    return out;
  }

  /// The bytes of the format in the header comment.
  std::vector<std::uint8_t> serialize() const {
    std::vector<std::uint8_t> out;
    out.reserve(64 + steps() * 12 + records_.size() * 5);
    out.insert(out.end(), magic, magic + 8);
    detail::put_le(out, version);
    detail::put_le(out, config_.seed);
    detail::put_le_double(out, config_.epsilon);
    detail::put_le_double(out, config_.lr);
    out.push_back(std::uint8_t(config_.dist));
    out.push_back(std::uint8_t(config_.difference));
    out.push_back(std::uint8_t(config_.code.kind()));
    out.push_back(std::uint8_t(config_.code.steps_per_nat()));
    detail::put_le_double(out, config_.code.parameter());
    detail::put_le(out, first_);
    detail::put_le(out, detail::crc32(out.data(), out.size()));
    for (std::size_t k = 0; k < steps(); ++k) {
      const std::size_t begin = out.size();
      detail::put_le(out, std::uint32_t(first_ + k));
      detail::put_le(out, std::uint32_t(start_[k + 1] - start_[k]));
      for (std::size_t i = start_[k]; i < start_[k + 1]; ++i) {
        detail::put_le(out, records_[i].machine);
        out.push_back(records_[i].byte);
      }
      detail::put_le(out, detail::crc32(out.data() + begin, out.size() - begin));
    }
    out.insert(out.end(), trailer, trailer + 4);
    detail::put_le(out, std::uint32_t(steps()));
    detail::put_le(out, detail::crc32(out.data(), out.size()));
    return out;
  }

  /// Reads serialize()'s bytes.
  /// @throws format_error for a wrong magic or version, a truncation, a bad
  ///         checksum, a gap or duplicate step, or a step whose machines
  ///         are duplicated or out of order; the message names the step and
  ///         machine.
  static byte_log parse(const std::uint8_t* data, std::size_t n) {
    constexpr const char* op = "polar::byte_log::parse";
    constexpr std::size_t header = 8 + 4 + 8 + 8 + 8 + 4 + 8 + 4 + 4;
    if (n < header + 12)
      detail::raise<format_error>(op, "the log is ", n, " bytes, shorter than a header and trailer (", header + 12,
                                  "): truncated");
    if (std::string(reinterpret_cast<const char*>(data), 8) != std::string(magic, 8))
      detail::raise<format_error>(op, "not a byte log: the first 8 bytes are not \"POLARLOG\"");
    const auto ver = detail::get_le<std::uint32_t>(data + 8);
    if (ver != version) detail::raise<format_error>(op, "version ", ver, ", this reader reads version ", version);
    const auto header_crc = detail::get_le<std::uint32_t>(data + header - 4);
    if (detail::crc32(data, header - 4) != header_crc)
      detail::raise<format_error>(op, "the header's checksum ", detail::hex32(header_crc), " does not match its data (",
                                  detail::hex32(detail::crc32(data, header - 4)), ")");
    shared_spsa c;
    c.seed = detail::get_le<std::uint64_t>(data + 12);
    c.epsilon = detail::get_le_double(data + 20);
    c.lr = detail::get_le_double(data + 28);
    c.dist = distribution(data[36]);
    if (data[37] > std::uint8_t(spsa_difference::one_sided))
      detail::raise<format_error>(op, "unknown difference ", int(data[37]), " in the header");
    c.difference = spsa_difference(data[37]);
    const auto kind = byte_code_kind(data[38]);
    const int steps_per_nat = data[39];
    const double parameter = detail::get_le_double(data + 40);
    try {
      if (kind == byte_code_kind::logarithmic)
        c.code = byte_code::logarithmic(parameter, steps_per_nat);
      else if (kind == byte_code_kind::linear)
        c.code = byte_code::linear(parameter);
      else
        detail::raise<format_error>(op, "unknown byte code ", int(kind));
      c.check(op);
    } catch (const value_error& e) {
      detail::raise<format_error>(op, "the header's settings are invalid: ", e.what());
    }
    byte_log log(c, detail::get_le<std::uint32_t>(data + 48));

    // The trailer: the whole log's checksum finds a cut between steps.
    const std::uint8_t* end = data + n - 12;
    if (std::string(reinterpret_cast<const char*>(end), 4) != std::string(trailer, 4))
      detail::raise<format_error>(op, "no trailer at the end: the log is truncated");
    const auto stated_steps = detail::get_le<std::uint32_t>(end + 4);
    std::size_t at = header;
    while (at < std::size_t(end - data)) {
      const std::uint32_t expect = log.end_step();
      if (std::size_t(end - data) - at < 8)
        detail::raise<format_error>(op, "truncated in the block of step ", expect);
      const auto step = detail::get_le<std::uint32_t>(data + at);
      const auto count = detail::get_le<std::uint32_t>(data + at + 4);
      const std::size_t block = 8 + std::size_t(count) * 5;
      if (std::size_t(end - data) - at < block + 4)
        detail::raise<format_error>(op, "truncated in the block of step ", step, " (", count, " records stated)");
      std::vector<byte_record> r(count);
      for (std::uint32_t i = 0; i < count; ++i) {
        r[i].machine = detail::get_le<std::uint32_t>(data + at + 8 + 5 * std::size_t(i));
        r[i].byte = data[at + 8 + 5 * std::size_t(i) + 4];
      }
      const auto stored = detail::get_le<std::uint32_t>(data + at + block);
      const auto computed = detail::crc32(data + at, block);
      if (stored != computed) {
        std::string machines;
        for (std::size_t i = 0; i < r.size() && i < 16; ++i) machines += (i ? ", " : "") + std::to_string(r[i].machine);
        if (r.size() > 16) machines += ", ...";
        detail::raise<format_error>(op, "the checksum of step ", step, " (", count, " records, machines ", machines,
                                    ") is ", detail::hex32(stored), " but its data give ", detail::hex32(computed));
      }
      log.check_next(op, step);
      detail::check_records<format_error>(op, step, r.data(), r.size());
      log.records_.insert(log.records_.end(), r.begin(), r.end());
      log.start_.push_back(log.records_.size());
      at += block + 4;
    }
    if (stated_steps != log.steps())
      detail::raise<format_error>(op, "the trailer states ", stated_steps, " steps but the log holds ", log.steps());
    const auto total = detail::get_le<std::uint32_t>(end + 8);
    if (detail::crc32(data, n - 4) != total)
      detail::raise<format_error>(op, "the whole log's checksum ", detail::hex32(total), " does not match its data (",
                                  detail::hex32(detail::crc32(data, n - 4)), ")");
    return log;
  }
  /// parse() over a whole vector.
  static byte_log parse(const std::vector<std::uint8_t>& bytes) { return parse(bytes.data(), bytes.size()); }

  /// Writes the log to `path` through a temporary file renamed into place,
  /// so a crash never leaves half a log under the real name.
  /// @throws format_error when the file cannot be written.
  void save(const std::string& path) const { detail::write_file_atomically("polar::byte_log::save", path, serialize()); }
  /// Reads a file written by save().
  static byte_log load(const std::string& path) { return parse(detail::read_file("polar::byte_log::load", path)); }

  /// Same settings, first step and records.
  friend bool operator==(const byte_log& a, const byte_log& b) noexcept {
    return a.config_ == b.config_ && a.first_ == b.first_ && a.start_ == b.start_ && a.records_ == b.records_;
  }

 private:
  static constexpr char magic[9] = "POLARLOG";
  static constexpr char trailer[5] = "LEND";

  void check_next(const char* op, std::uint32_t step) const {
    const std::uint32_t expect = end_step();
    if (step == expect) return;
    if (step > expect)
      detail::raise<format_error>(op, "step ", step, " follows step ", std::int64_t(expect) - 1, ": a gap (steps ",
                                  expect, " to ", step - 1, " missing)");
    detail::raise<format_error>(op, "step ", step, " comes again after step ", std::int64_t(expect) - 1,
                                ": a duplicate");
  }

  shared_spsa config_{};
  std::uint32_t first_ = 0;
  std::vector<std::size_t> start_{0};  // records of step first_ + k: [start_[k], start_[k + 1])
  std::vector<byte_record> records_;
};

/// Applies one step's records to the weights: in increasing order of
/// machine, theta <- theta - (lr / n) decode(byte) z_(seed, machine, step, 0).
/// @throws value_error for records out of order, duplicated or absent
///         (nothing is applied then).
template <class Backend, class T>
void apply_records(Backend& be, const spsa_params<T>& p, const shared_spsa& c, std::uint32_t step,
                   const std::vector<byte_record>& r) {
  detail::check_records<value_error>("polar::apply_records", step, r.data(), r.size());
  if (r.empty()) return;
  const double share = c.lr / double(r.size());
  for (const auto& rec : r) {
    const rng_key key{c.seed, rec.machine, step, 0};
    const T scale = T(-(share * c.code.decode(rec.byte)));
    for (index t = 0; t < p.count(); ++t) be.add_random(p.view(t), key, c.dist, scale, p.offset(t));
  }
}

/// Applies every step of a log to weights that are the checkpoint at
/// log.first_step(): the result is the weights at log.end_step(), bit for
/// bit.
template <class Backend, class T>
void replay(Backend& be, const spsa_params<T>& p, const byte_log& log) {
  for (std::uint32_t s = log.first_step(); s < log.end_step(); ++s) apply_records(be, p, log.config(), s, log.records(s));
}

/// One machine's replica in a decentralized SPSA run (see the header
/// comment). It holds the step counter, the exact mode's copy of the
/// weights and, unless turned off, the byte log from where it started.
template <class Backend, class T>
class decentralized_spsa {
 public:
  /// Counters since construction.
  struct counters {
    std::uint64_t proposed = 0;       ///< bytes this machine published
    std::uint64_t applied = 0;        ///< records applied (its own and others')
    std::uint64_t saturated = 0;      ///< own estimates beyond the code's top level
    std::uint64_t zeroed = 0;         ///< own non-zero estimates that coded as 0
    std::uint64_t failed = 0;         ///< steps whose own estimate threw (absent published)
  };

  /// A replica of machine `machine` whose weights are those of step `step`.
  /// @throws value_error for settings out of range.
  decentralized_spsa(const shared_spsa& config, std::uint32_t machine, std::uint32_t step = 0, bool keep_log = true)
      : config_(config), machine_(machine), step_(step), keep_log_(keep_log), log_(config, step) {
    config_.check("polar::decentralized_spsa");
  }

  /// The settings shared by every machine.
  const shared_spsa& config() const noexcept { return config_; }
  /// This replica's machine number.
  std::uint32_t machine() const noexcept { return machine_; }
  /// The step the weights are at: the next one to propose or apply.
  std::uint32_t step() const noexcept { return step_; }
  /// The log from the replica's start (or its last restart_log).
  const byte_log& log() const noexcept { return log_; }
  /// Starts the log afresh at the current step (after the caller saved a
  /// checkpoint of the weights there).
  void restart_log() { log_ = byte_log(config_, step_); }
  /// What this replica has done so far.
  const counters& stats() const noexcept { return stats_; }
  /// The unquantized projected gradient of the last propose().
  double last_projected() const noexcept { return last_; }

  /// Estimates the projected gradient at the current weights along this
  /// machine's perturbation of this step and returns its byte. The weights
  /// come back bit for bit.
  /// @throws non_finite_error when the oracle returns NaN or infinity, and
  ///         whatever the oracle throws (the weights restored first).
  template <class Loss>
  std::uint8_t propose(Backend& be, const spsa_params<T>& p, Loss&& loss) {
    const spsa est = config_.estimator(machine_);
    const spsa_gradient g = est.estimate(be, p, std::forward<Loss>(loss), step_, ws_);
    last_ = g.projected[0];
    const std::uint8_t b = config_.code.encode(last_);
    ++stats_.proposed;
    if (config_.code.saturates(last_)) ++stats_.saturated;
    if ((b & 0x7Fu) == 0 && last_ != 0) ++stats_.zeroed;
    return b;
  }

  /// Applies this step's records (every machine's that published, in
  /// increasing order of machine) and moves to the next step.
  /// @throws value_error for records out of order, duplicated or absent
  ///         (nothing applied, the step not advanced).
  void apply(Backend& be, const spsa_params<T>& p, const std::vector<byte_record>& records) {
    detail::check_records<value_error>("polar::decentralized_spsa::apply", step_, records.data(), records.size());
    apply_records(be, p, config_, step_, records);
    if (keep_log_) log_.append(step_, records);
    stats_.applied += records.size();
    ++step_;
  }

  /// One whole step through a transport: propose, exchange, apply. When
  /// the oracle fails, this machine publishes byte_code::absent, applies the
  /// others' records, and then rethrows: the replica stays in step with the
  /// others (who would otherwise wait for it) and the caller still learns
  /// of the failure.
  template <class Transport, class Loss>
  void step(Backend& be, const spsa_params<T>& p, Transport& transport, Loss&& loss) {
    std::uint8_t b = byte_code::absent;
    std::exception_ptr failure;
    try {
      b = propose(be, p, std::forward<Loss>(loss));
    } catch (...) {
      failure = std::current_exception();
      ++stats_.failed;
    }
    apply(be, p, transport.exchange(step_, machine_, b));
    if (failure) std::rethrow_exception(failure);
  }

  /// A step in which this machine publishes nothing but applies the
  /// others' records (it follows the run without contributing).
  template <class Transport>
  void observe(Backend& be, const spsa_params<T>& p, Transport& transport) {
    apply(be, p, transport.exchange(step_, machine_, byte_code::absent));
  }

  /// Brings the weights from this replica's step to log.end_step() by
  /// applying the log's records; the log must share this run's settings and
  /// cover the replica's step.
  /// @throws value_error when it does not (nothing applied).
  void catch_up(Backend& be, const spsa_params<T>& p, const byte_log& log) {
    constexpr const char* op = "polar::decentralized_spsa::catch_up";
    if (!(log.config() == config_))
      detail::raise<value_error>(op, "the log's settings (seed ", log.config().seed, ", code ",
                                 log.config().code.describe(), ") are not this run's (seed ", config_.seed, ", code ",
                                 config_.code.describe(), ")");
    if (step_ < log.first_step() || step_ > log.end_step())
      detail::raise<value_error>(op, "the replica is at step ", step_, " but the log covers steps ", log.first_step(),
                                 " to ", log.end_step());
    while (step_ < log.end_step()) apply(be, p, log.records(step_));
  }

 private:
  shared_spsa config_;
  std::uint32_t machine_;
  std::uint32_t step_;
  bool keep_log_;
  byte_log log_;
  counters stats_{};
  double last_ = 0;
  typename spsa::workspace<Backend, T> ws_;
};

}  // namespace polar
