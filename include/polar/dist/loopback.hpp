// polar/dist/loopback.hpp: the in-process transport of decentralized SPSA
// (estimator/decentralized.hpp), for tests and for simulating many machines
// on one.
//
// The machines taking part in each step are scheduled in advance
// (schedule(machine, first, last); a machine may have several intervals:
// it left and came back). A step is complete when every machine scheduled
// for it has published, and its records are dropped once every one of them
// has collected them.
//
// Two ways to drive it:
//   - one thread per machine: exchange() publishes and blocks until the step
//     is complete (or the timeout passes: transport_error naming the
//     machines still missing);
//   - one thread for all: publish() every machine's byte, then collect()
//     once per machine.
#pragma once

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <limits>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "polar/core/error.hpp"
#include "polar/estimator/decentralized.hpp"

namespace polar::dist {

/// Machines as threads of one process (or steps driven by one thread):
/// publish() a byte per machine and step, collect() every machine's bytes of
/// a step; schedules say when machines join and leave (docs/decentralized.md).
class loopback {
 public:
  /// A loopback whose collect() gives up after timeout (transport_error).
  explicit loopback(std::chrono::milliseconds timeout = std::chrono::seconds(60)) : timeout_(timeout) {}
  loopback(const loopback&) = delete;
  loopback& operator=(const loopback&) = delete;

  /// Machine m takes part in steps first..last.
  /// @throws value_error when last < first or the interval overlaps one of
  ///         m's intervals already scheduled.
  void schedule(std::uint32_t machine, std::uint32_t first, std::uint32_t last = never) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (last < first)
      detail::raise<value_error>("polar::dist::loopback::schedule", "machine ", machine, ": last step ", last,
                                 " before first step ", first);
    for (const auto& i : intervals_)
      if (i.machine == machine && !(last < i.first || i.last < first))
        detail::raise<value_error>("polar::dist::loopback::schedule", "machine ", machine, ": steps ", first, " to ",
                                   last, " overlap its steps ", i.first, " to ", i.last);
    intervals_.push_back({machine, first, last});
  }

  /// Whether machine m is scheduled for step s.
  bool member(std::uint32_t machine, std::uint32_t step) const {
    std::lock_guard<std::mutex> lock(mutex_);
    return is_member(machine, step);
  }
  /// The machines scheduled for step s, in increasing order.
  std::vector<std::uint32_t> members(std::uint32_t step) const {
    std::lock_guard<std::mutex> lock(mutex_);
    return members_of(step);
  }

  /// Publishes machine m's byte for step s (byte_code::absent: none).
  /// @throws value_error when m is not scheduled for s or already published.
  void publish(std::uint32_t step, std::uint32_t machine, std::uint8_t byte) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      publish_locked(step, machine, byte);
    }
    changed_.notify_all();
  }

  /// Whether every machine scheduled for step s has published.
  bool complete(std::uint32_t step) const {
    std::lock_guard<std::mutex> lock(mutex_);
    return complete_locked(step);
  }

  /// Step s's records (the bytes other than absent, in increasing order of
  /// machine), for machine m, which must be scheduled for s.
  /// @throws value_error when m is not scheduled for s, has collected s
  ///         already, or s is not complete.
  std::vector<byte_record> collect(std::uint32_t step, std::uint32_t machine) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!complete_locked(step))
      detail::raise<value_error>("polar::dist::loopback::collect", "step ", step, " is not complete: ",
                                 missing(step), " have not published");
    return collect_locked(step, machine);
  }

  /// publish, then wait for the step to complete and collect it.
  /// @throws value_error as publish does; transport_error when the step is
  ///         not complete within the timeout.
  std::vector<byte_record> exchange(std::uint32_t step, std::uint32_t machine, std::uint8_t byte) {
    std::unique_lock<std::mutex> lock(mutex_);
    publish_locked(step, machine, byte);
    changed_.notify_all();
    if (!changed_.wait_for(lock, timeout_, [&] { return complete_locked(step); }))
      detail::raise<transport_error>("polar::dist::loopback::exchange", "machine ", machine, " waited ",
                                     timeout_.count(), " ms for step ", step, ": ", missing(step),
                                     " did not publish");
    return collect_locked(step, machine);
  }

  /// Bytes published so far (absent included: it is sent too).
  std::uint64_t bytes_published() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return published_;
  }

  static constexpr std::uint32_t never = std::numeric_limits<std::uint32_t>::max();  ///< a schedule's step that never comes

 private:
  struct interval {
    std::uint32_t machine, first, last;
  };
  struct pending {
    std::vector<byte_record> bytes;          // as published, absent included
    std::vector<std::uint32_t> collected;    // machines that collected
  };

  bool is_member(std::uint32_t machine, std::uint32_t step) const {
    for (const auto& i : intervals_)
      if (i.machine == machine && i.first <= step && step <= i.last) return true;
    return false;
  }
  std::vector<std::uint32_t> members_of(std::uint32_t step) const {
    std::vector<std::uint32_t> m;
    for (const auto& i : intervals_)
      if (i.first <= step && step <= i.last) m.push_back(i.machine);
    std::sort(m.begin(), m.end());
    return m;
  }
  void publish_locked(std::uint32_t step, std::uint32_t machine, std::uint8_t byte) {
    constexpr const char* op = "polar::dist::loopback::publish";
    if (!is_member(machine, step))
      detail::raise<value_error>(op, "machine ", machine, " is not scheduled for step ", step);
    auto& p = steps_[step];
    for (const auto& r : p.bytes)
      if (r.machine == machine)
        detail::raise<value_error>(op, "machine ", machine, " published twice at step ", step);
    p.bytes.push_back({machine, byte});
    ++published_;
  }
  bool complete_locked(std::uint32_t step) const {
    const auto it = steps_.find(step);
    const std::size_t have = it == steps_.end() ? 0 : it->second.bytes.size();
    return have == members_of(step).size();
  }
  std::string missing(std::uint32_t step) const {
    std::string out;
    const auto it = steps_.find(step);
    for (const auto m : members_of(step)) {
      bool found = false;
      if (it != steps_.end())
        for (const auto& r : it->second.bytes) found = found || r.machine == m;
      if (!found) out += (out.empty() ? "machine " : ", machine ") + std::to_string(m);
    }
    return out;
  }
  std::vector<byte_record> collect_locked(std::uint32_t step, std::uint32_t machine) {
    constexpr const char* op = "polar::dist::loopback::collect";
    if (!is_member(machine, step))
      detail::raise<value_error>(op, "machine ", machine, " is not scheduled for step ", step);
    auto it = steps_.find(step);
    std::vector<byte_record> out;
    if (it == steps_.end()) return out;  // nobody was scheduled
    auto& p = it->second;
    if (std::find(p.collected.begin(), p.collected.end(), machine) != p.collected.end())
      detail::raise<value_error>(op, "machine ", machine, " collected step ", step, " already");
    for (const auto& r : p.bytes)
      if (r.byte != byte_code::absent) out.push_back(r);
    std::sort(out.begin(), out.end(), [](const byte_record& a, const byte_record& b) { return a.machine < b.machine; });
    p.collected.push_back(machine);
    if (p.collected.size() == p.bytes.size()) steps_.erase(it);
    return out;
  }

  std::chrono::milliseconds timeout_;
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<interval> intervals_;
  std::map<std::uint32_t, pending> steps_;
  std::uint64_t published_ = 0;
};

}  // namespace polar::dist
