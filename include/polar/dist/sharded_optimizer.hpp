// polar/dist/sharded_optimizer.hpp: one optimizer for a whole model, its
// work and state shared out among the ranks of data-parallel training.
//
// Every rank holds the whole model and computes gradients on its own data.
// The sharded optimizer is configured on every rank exactly as the
// single-process polar::optimizer is (groups, rules, schedules, clipping,
// the non-finite policy), and every rank adds the same tensors in the same
// order. Then each tensor is owned by one rank:
//
//   - ownership: a balancer that every rank runs on the same numbers
//     (balance(): the costs of the tensors' steps, largest first, each to
//     the rank with the least work so far), so the ranks agree without
//     talking. A tensor's state exists only on its owner (ZeRO-1): the
//     state memory of a rank is its share of the whole.
//   - a step: (1) the ranks check that they are at the same step with the
//     same model (a 32-byte header from each rank); (2) each rank sends the
//     gradients of the tensors a rank owns to that rank (an all-to-all per
//     bucket: a reduce-scatter's bytes), and the owner adds them in the
//     order of the ranks and divides by their number: the averaged gradient
//     ((g_0 + g_1) + g_2 + ...) / N, the same bits whatever the MPI; (3) the
//     owners measure what decides the step for the whole model (non-finite
//     gradients, squared norms for clipping) and the ranks gather these
//     three numbers a tensor, so every rank takes the same decision from
//     the same sums in the same order; (4) owners step their tensors, and
//     each bucket's new weights go to every rank (an all-gather) while the
//     owners step the next bucket; (5) 8 bytes from each rank say whether
//     its steps all succeeded.
//
// So the weights after a step are bit-identical to those of one
// polar::optimizer that steps the averaged gradient, on any number of ranks.
// Bytes per rank and step: (N - 1) / N of the gradients' bytes sent in (2)
// and the same of the weights' bytes in (4), for an even split: 2 (N - 1) /
// N P for P parameter bytes, what the all-reduce of plain data parallelism
// moves; plus 32 bytes of header, 24 per owned tensor (3) and 8 of status (5).
//
// Memory: the states of the owned tensors; the averaged gradients of the
// owned tensors; buffers of two buckets for sending and receiving, in the
// communicator's memory. Where that is the backend's (MPI with the host
// backends, NCCL with CUDA) the backend packs and averages there; a host
// communicator with a device backend stages through the host
// (copy_to_host, copy_from_host).
//
// Errors: a rank whose gradients do not fit its tensors refuses the step,
// and every other rank throws transport_error naming it; ranks at other
// steps (transport_error) or with another model (shape_error: names, shapes,
// groups or policies differ) are found in (1) before anything moves. A rank
// that dies or stops calling is found by the communicator's timeout
// (transport_error). A policy that refuses a tensor's step on its owner (a
// retraction that fails) throws its error there; the owner still sends
// every bucket, and (5) makes every other rank throw polar::error naming
// the rank and the tensor. As in one process, tensors stepped before the
// failure keep their step (every rank holds the owners' weights) and the
// step does not count on any rank.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <exception>
#include <initializer_list>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "polar/checkpoint.hpp"
#include "polar/core/error.hpp"
#include "polar/dist/communicator.hpp"
#include "polar/optimizer.hpp"

namespace polar::detail {
// The memory a communicator's buffers are in: Communicator::space, or host.
template <class C, class = void>
struct comm_space_of {
  static constexpr memory_space value = memory_space::host;
};
template <class C>
struct comm_space_of<C, std::void_t<decltype(C::space)>> {
  static constexpr memory_space value = C::space;
};
template <class T>
struct add_fn {
  POLAR_HOST_DEVICE T operator()(T a, T b) const { return a + b; }
};
template <class T>
struct divide_fn {
  T n;
  POLAR_HOST_DEVICE T operator()(T a) const { return a / n; }
};
}  // namespace polar::detail

namespace polar::dist {

/// The owner of each of the tensors of costs `cost` among `ranks` ranks:
/// the tensors in decreasing cost (ties: the lower index first), each given
/// to the rank with the least cost so far (ties: the lower rank). The same
/// input gives the same owners on every rank.
/// @throws value_error when ranks < 1 or a cost is negative or not finite.
inline std::vector<int> balance(const std::vector<double>& cost, int ranks) {
  constexpr const char* op = "polar::dist::balance";
  if (ranks < 1) polar::detail::raise<value_error>(op, "needs at least 1 rank, got ", ranks);
  std::vector<std::size_t> order(cost.size());
  for (std::size_t i = 0; i < cost.size(); ++i) {
    if (!(cost[i] >= 0) || cost[i] > 1e300)
      polar::detail::raise<value_error>(op, "the cost of tensor ", i, " is ", cost[i], "; costs are finite and >= 0");
    order[i] = i;
  }
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return cost[a] > cost[b]; });
  std::vector<double> load(static_cast<std::size_t>(ranks), 0.0);
  std::vector<int> owner(cost.size(), 0);
  for (std::size_t i : order) {
    int best = 0;
    for (int r = 1; r < ranks; ++r)
      if (load[std::size_t(r)] < load[std::size_t(best)]) best = r;
    owner[i] = best;
    load[std::size_t(best)] += cost[i];
  }
  return owner;
}


/// All-gather of host bytes on any communicator: directly where its buffers
/// are host memory, through its host_all_gather where they are the
/// device's (the sharded optimizer's headers and measures).
template <class Comm>
void all_gather_host(Comm& c, const void* send, std::size_t bytes, void* recv, const std::size_t* recv_bytes) {
  if constexpr (polar::detail::comm_space_of<Comm>::value == memory_space::host)
    all_gather(c, send, bytes, recv, recv_bytes);
  else
    c.host_all_gather(send, bytes, recv, recv_bytes);
}

/// polar::optimizer sharded over the ranks of a communicator (see the header
/// comment). @tparam Communicator local_communicator, mpi_communicator, or
/// any type with their operations.
template <class Backend, class T, class Communicator>
class sharded_optimizer {
  using inner_type = polar::optimizer<Backend, T>;
  // Buffers in the communicator's memory. Where that is the backend's
  // memory, gradients and weights are packed and averaged with the
  // backend's operations; a host communicator with a device backend
  // stages them through the host.
  static constexpr memory_space comm_space = polar::detail::comm_space_of<Communicator>::value;
  static constexpr bool direct = comm_space == Backend::space;
  static_assert(direct || comm_space == memory_space::host,
                "polar::dist::sharded_optimizer: a communicator of device memory needs a backend of device memory");
  using staging = std::conditional_t<direct, typename Backend::template buffer<T>, std::vector<T>>;

 public:
  /// As polar::optimizer::nonfinite, decided for the whole model.
  nonfinite_policy nonfinite = nonfinite_policy::raise;
  /// As polar::optimizer::clip_norm, over the gradients of the whole model.
  double clip_norm = 0;
  /// Tensors are sent in buckets of about this many bytes (a tensor larger
  /// than a bucket is a bucket of its own): fewer, larger messages; and the
  /// weights of one bucket travel while the next is stepped.
  std::size_t bucket_bytes = std::size_t(8) << 20;
  /// Whether a bucket's all-gather of weights overlaps the next bucket's
  /// steps (otherwise each is waited for at once: for measuring).
  bool overlap = true;

  /// An empty optimizer on be and comm (both must outlive it).
  sharded_optimizer(Backend& be, Communicator& comm) : be_(&be), comm_(&comm), inner_(be) {}
  sharded_optimizer(const sharded_optimizer&) = delete;
  sharded_optimizer& operator=(const sharded_optimizer&) = delete;

  /// As polar::optimizer::add_group; before shard().
  template <class Policy>
  optimizer_group<Backend, T>& add_group(std::string name, Policy policy, polar::rule r = polar::rule::all()) {
    not_sharded("polar::dist::sharded_optimizer::add_group");
    return inner_.add_group(std::move(name), std::move(policy), std::move(r));
  }
  /// As polar::optimizer::add; before shard(). No state is made yet.
  index add(std::string name, param_view<T> w) {
    not_sharded("polar::dist::sharded_optimizer::add");
    return inner_.add_to(std::move(name), w, nullptr, false);
  }
  /// As polar::optimizer::add into a named group.
  index add(std::string name, param_view<T> w, const std::string& group) {
    constexpr const char* op = "polar::dist::sharded_optimizer::add";
    not_sharded(op);
    return inner_.add_to(std::move(name), w, &inner_.group_named(op, group), false);
  }

  /// Decides the owners, makes the owners' states and gives every rank the
  /// owners' weights (so replicas start equal, as torch's DDP does from rank
  /// 0). Collective: every rank calls it, after adding every tensor; the
  /// first step() calls it if nobody did. Checks first that every rank has
  /// the same model.
  /// @throws shape_error (ranks with different models), transport_error.
  void shard() {
    constexpr const char* op = "polar::dist::sharded_optimizer::shard";
    if (sharded_) return;
    fingerprint_ = fingerprint();
    agree(op, 0);
    const std::size_t n = entries().size();
    std::vector<double> cost(n);
    for (std::size_t i = 0; i < n; ++i) cost[i] = inner_.groups_[entries()[i].group]->step_cost(entries()[i].w);
    owner_ = balance(cost, comm_->size());
    for (std::size_t i = 0; i < n; ++i)
      if (owner_[i] == comm_->rank()) {
        auto& e = inner_.entries_[i];
        auto& g = *inner_.groups_[e.group];
        e.slot = g.add_state(*be_, e.name, e.w);
        g.share(inner_.pool_);
      }
    plan();
    sharded_ = true;
    // Every rank takes the owners' weights.
    for (std::size_t b = 0; b < buckets_.size(); ++b) {
      start_gather(b);
      finish_gather(b);
    }
  }

  /// Whether shard() ran.
  bool sharded() const noexcept { return sharded_; }
  /// The rank that owns tensor i (after shard()).
  int owner(index i) const { return owner_.at(std::size_t(i)); }
  /// The tensors of bucket b: [first, second).
  std::pair<index, index> bucket(std::size_t b) const { return {buckets_.at(b).first, buckets_.at(b).last}; }
  /// Number of buckets (after shard()).
  std::size_t buckets() const noexcept { return buckets_.size(); }

  /// The single-process optimizer behind it: its groups, settings and
  /// states (of the owned tensors).
  inner_type& local() noexcept { return inner_; }
  /// As polar::optimizer::group.
  optimizer_group<Backend, T>& group(const std::string& name) const { return inner_.group(name); }
  /// As polar::optimizer::settings.
  template <class Policy>
  Policy& settings(const std::string& group_name) {
    return inner_.template settings<Policy>(group_name);
  }
  /// As polar::optimizer::state_of, for a tensor this rank owns.
  template <class Policy>
  typename Policy::template state<Backend, T>& state_of(index i) {
    return inner_.template state_of<Policy>(i);
  }
  /// Number of tensors.
  index size() const noexcept { return inner_.size(); }
  /// The name tensor i was added under.
  const std::string& name(index i) const { return inner_.name(i); }
  /// Steps taken.
  long steps() const noexcept { return inner_.steps(); }
  /// Steps skipped by the skip policy.
  long skipped() const noexcept { return inner_.skipped(); }
  /// As polar::optimizer::zeroed_entries.
  long long zeroed_entries() const noexcept { return inner_.zeroed_entries(); }
  /// The norm of the averaged gradients at the last step (where clipping asked for it).
  double last_norm() const noexcept { return inner_.last_norm(); }
  /// Bytes of the states this rank holds (its owned tensors').
  std::size_t state_bytes() { return inner_.state_bytes(); }
  /// Bytes of every tensor's weights: P.
  std::size_t parameter_bytes() const {
    std::size_t p = 0;
    for (const auto& e : entries()) p += std::size_t(e.w.elements().size()) * sizeof(T);
    return p;
  }
  /// Bytes of the weights of the tensors this rank owns.
  std::size_t owned_bytes() const {
    std::size_t p = 0;
    for (std::size_t i = 0; i < entries().size(); ++i)
      if (owner_.size() == entries().size() && owner_[i] == comm_->rank())
        p += std::size_t(entries()[i].w.elements().size()) * sizeof(T);
    return p;
  }
  /// What the communicator moved so far.
  const traffic& counted() const noexcept { return comm_->counted(); }

  /// One step: every rank passes its own gradients (in the order of add()),
  /// and every rank's weights become those of one optimizer stepping their
  /// average. Collective.
  /// @throws as polar::optimizer::step (the same error on every rank);
  ///         transport_error for a rank that refused the step, fell out of
  ///         step or stopped answering; shape_error for ranks whose models
  ///         differ.
  void step(const std::vector<param_view<const T>>& grads) { step(grads.data(), grads.size()); }
  /// The same, from a braced list.
  void step(std::initializer_list<param_view<const T>> grads) { step(grads.begin(), grads.size()); }
  /// The same, from n gradients at grads.
  void step(const param_view<const T>* grads, std::size_t n) {
    constexpr const char* op = "polar::dist::sharded_optimizer::step";
    shard();
    // This rank's gradients must fit its tensors; a refusal is sent in the
    // header so that every rank stops.
    std::string refusal;
    if (n != entries().size()) {
      refusal = "got " + std::to_string(n) + " gradients for " + std::to_string(entries().size()) + " tensors";
    } else {
      for (std::size_t i = 0; i < n && refusal.empty(); ++i)
        if (!grads[i].same_shape_as(entries()[i].w))
          refusal = "the gradient of '" + entries()[i].name + "' is " + grads[i].shape_string() +
                    " but the tensor is " + entries()[i].w.shape_string();
    }
    agree(op, refusal.empty() ? 0 : 1);
    if (!refusal.empty()) polar::detail::raise<shape_error>(op, refusal);
    // Gradients to their owners, averaged there.
    for (std::size_t b = 0; b < buckets_.size(); ++b) reduce_bucket(b, grads);
    inner_.nonfinite = nonfinite;
    inner_.clip_norm = clip_norm;
    const long skipped = inner_.skipped();
    // The owners step; each bucket's weights start travelling as soon as
    // its tensors are stepped.
    gathers_started_ = 0;
    gathers_finished_ = 0;
    stepping_ = false;
    next_ = 0;
    const auto counts = counters();
    std::exception_ptr failure;
    try {
      inner_.step_with(op, avg_views_.data(), n, [&](std::vector<double>& measured) { share_measures(measured); },
                       [&](std::size_t i) { after_step(i); });
    } catch (...) {
      // Before the steps every rank throws the same error from the same
      // numbers; a policy that refuses a tensor's step throws on its owner
      // only, which still sends every bucket and then tells the others.
      if (!stepping_) throw;
      failure = std::current_exception();
    }
    if (inner_.skipped() != skipped) return;  // every rank skipped
    std::uint64_t failed = 0;                 // 1 + the tensor this rank failed on
    if (failure) {
      std::size_t i = next_;
      while (i < n && owner_[i] != comm_->rank()) ++i;
      failed = i + 1;
      while (gathers_started_ < buckets_.size()) {
        if (gathers_started_ >= gathers_finished_ + 2) finish_gather(gathers_finished_);
        start_gather(gathers_started_);
      }
    }
    while (gathers_finished_ < gathers_started_) finish_gather(gathers_finished_);
    // Whether a rank failed: 8 bytes from each.
    const int p = comm_->size();
    status_.assign(std::size_t(p), 0);
    small_counts_.assign(std::size_t(p), sizeof(std::uint64_t));
    all_gather_host(*comm_, &failed, sizeof failed, status_.data(), small_counts_.data());
    for (int r = 0; r < p; ++r)
      if (status_[std::size_t(r)] != 0) {
        // As in one process, a step that failed does not count; the weights
        // every rank holds are the owners' (tensors stepped before the
        // failure keep their step).
        restore(counts);
        if (failure) std::rethrow_exception(failure);
        polar::detail::raise<error>(op, "rank ", r, "'s policy refused the step of '",
                                    entries()[status_[std::size_t(r)] - 1].name,
                                    "' (rank ", r, " threw the policy's error); every rank holds the owners' weights "
                                    "and the step does not count");
      }
  }

  /// Writes this rank's shard (its tensors' weights and states, the counts)
  /// to path + ".rank-R-of-N", each file written whole or not at all; then,
  /// when every rank has written its shard, rank 0 writes the manifest at
  /// path (the number of ranks and the model's fingerprint), so a manifest
  /// names only complete sets of shards. Collective.
  void save(const std::string& path) {
    shard();
    checkpoint ck;
    inner_.save(ck);
    ck.put_integer("dist/rank", comm_->rank());
    ck.put_integer("dist/ranks", comm_->size());
    ck.put_integer("dist/fingerprint", std::int64_t(fingerprint_ & 0x7fffffffffffffffull));
    ck.save(shard_path(path, comm_->rank(), comm_->size()));
    comm_->barrier();
    if (comm_->rank() == 0) {
      checkpoint m;
      m.put_integer("dist/ranks", comm_->size());
      m.put_integer("dist/fingerprint", std::int64_t(fingerprint_ & 0x7fffffffffffffffull));
      m.put_integer("steps", inner_.steps());
      m.save(path);
    }
    comm_->barrier();
  }

  /// Reads what save() wrote on any number of ranks into this optimizer on
  /// this number: every rank reads every shard, takes every tensor's
  /// weights and the states of the tensors it owns now, and resumes
  /// bit-exactly. Collective; the ranks agree before any writes.
  /// @throws format_error (a missing or damaged file, a shard of another
  ///         set), shape_error (another model), transport_error (another
  ///         rank could not read).
  void load(const std::string& path) {
    constexpr const char* op = "polar::dist::sharded_optimizer::load";
    shard();
    checkpoint all;
    std::exception_ptr failure;
    try {
      const checkpoint m = checkpoint::load(path);
      const auto ranks = m.get_integer("dist/ranks");
      if (m.get_integer("dist/fingerprint") != std::int64_t(fingerprint_ & 0x7fffffffffffffffull))
        polar::detail::raise<shape_error>(op, "the checkpoint at ", path, " holds another model (names, shapes, "
                                          "groups or policies differ)");
      for (std::int64_t r = 0; r < ranks; ++r) {
        const std::string file = shard_path(path, int(r), int(ranks));
        const checkpoint s = checkpoint::load(file);
        if (s.get_integer("dist/rank") != r || s.get_integer("dist/ranks") != ranks ||
            s.get_integer("steps") != m.get_integer("steps"))
          polar::detail::raise<format_error>(op, file, " is not shard ", r, " of ", ranks, " at step ",
                                             m.get_integer("steps"), " of the manifest ", path);
        all.merge(s, "dist/");
      }
    } catch (const error&) {
      failure = std::current_exception();
    }
    agree(op, failure ? 2 : 0);
    if (failure) std::rethrow_exception(failure);
    inner_.load(all);
  }

  /// The file of shard r of n of the checkpoint at path.
  static std::string shard_path(const std::string& path, int r, int n) {
    return path + ".rank-" + std::to_string(r) + "-of-" + std::to_string(n);
  }

 private:
  using entry = typename inner_type::entry;
  struct bucket_plan {
    index first = 0, last = 0;       // tensors [first, last)
    std::vector<std::size_t> elems;  // elements each rank owns in it
  };
  struct header {
    std::uint64_t magic, step, fingerprint, status;
  };
  static constexpr std::uint64_t magic = 0x706f6c6172646973ull;  // "polardis"

  const std::vector<entry>& entries() const noexcept { return inner_.entries_; }

  void not_sharded(const char* op) const {
    if (sharded_)
      polar::detail::raise<value_error>(op, "the optimizer is sharded already; add every group and tensor first");
  }

  // FNV-1a over the names, shapes, groups and policies of the tensors.
  std::uint64_t fingerprint() const {
    std::uint64_t h = 1469598103934665603ull;
    const auto mix = [&](const void* p, std::size_t n) {
      const auto* c = static_cast<const unsigned char*>(p);
      for (std::size_t k = 0; k < n; ++k) h = (h ^ c[k]) * 1099511628211ull;
    };
    const std::uint64_t count = entries().size();
    mix(&count, sizeof count);
    for (const auto& e : entries()) {
      mix(e.name.data(), e.name.size() + 1);
      const std::string shape = e.w.shape_string(), policy = inner_.groups_[e.group]->policy_name(),
                        group = inner_.groups_[e.group]->name();
      mix(shape.data(), shape.size() + 1);
      mix(group.data(), group.size() + 1);
      mix(policy.data(), policy.size() + 1);
    }
    const std::uint64_t size = sizeof(T);
    mix(&size, sizeof size);
    return h;
  }

  // Every rank sends its step, model and status; all must agree.
  void agree(const char* op, std::uint64_t status) {
    const int p = comm_->size();
    const header mine{magic, std::uint64_t(inner_.steps()), fingerprint_, status};
    auto& all = headers_;
    all.resize(std::size_t(p));
    small_counts_.assign(std::size_t(p), sizeof(header));
    all_gather_host(*comm_, &mine, sizeof mine, all.data(), small_counts_.data());
    for (int r = 0; r < p; ++r)
      if (all[std::size_t(r)].magic != magic)
        polar::detail::raise<transport_error>(op, "rank ", r, " sent something other than a sharded optimizer's "
                                              "header (the ranks are out of step)");
    for (int r = 0; r < p; ++r)
      if (all[std::size_t(r)].status != 0 && status == 0)  // a rank that refused throws its own error
        polar::detail::raise<transport_error>(op, "rank ", r, all[std::size_t(r)].status == 1
                                                                  ? " refused the step (its gradients do not fit its tensors)"
                                                                  : " could not read the checkpoint",
                                              "; nothing was stepped or written on rank ", comm_->rank());
    for (int r = 0; r < p; ++r)
      if (all[std::size_t(r)].fingerprint != fingerprint_)
        polar::detail::raise<shape_error>(op, "rank ", r, " holds another model than rank ", comm_->rank(),
                                          " (fingerprints ", all[std::size_t(r)].fingerprint, " and ", fingerprint_,
                                          ": names, shapes, groups or policies differ)");
    for (int r = 0; r < p; ++r)
      if (all[std::size_t(r)].step != mine.step) {
        std::string steps;
        for (int q = 0; q < p; ++q)
          steps += (q ? ", " : "") + std::string("rank ") + std::to_string(q) + " at step " +
                   std::to_string(all[std::size_t(q)].step);
        polar::detail::raise<transport_error>(op, "the ranks are out of step: ", steps);
      }
  }

  // Buckets, the averaged gradients' places and views, the host buffers.
  void plan() {
    const int p = comm_->size(), me = comm_->rank();
    const std::size_t n = entries().size();
    buckets_.clear();
    std::size_t bytes = 0;
    for (std::size_t i = 0; i < n; ++i) {
      const std::size_t b = std::size_t(entries()[i].w.elements().size()) * sizeof(T);
      if (buckets_.empty() || (bytes > 0 && bytes + b > bucket_bytes)) {
        buckets_.push_back(bucket_plan{index(i), index(i), std::vector<std::size_t>(std::size_t(p), 0)});
        bytes = 0;
      }
      auto& k = buckets_.back();
      k.last = index(i) + 1;
      k.elems[std::size_t(owner_[i])] += std::size_t(entries()[i].w.elements().size());
      bytes += b;
    }
    std::size_t owned = 0, largest = 0;
    offset_.assign(n, 0);
    for (std::size_t i = 0; i < n; ++i)
      if (owner_[i] == me) {
        offset_[i] = owned;
        owned += std::size_t(entries()[i].w.elements().size());
      }
    for (const auto& k : buckets_) {
      std::size_t total = 0;
      for (auto e : k.elems) total += e;
      largest = std::max(largest, total);
    }
    avg_ = be_->template allocate<T>(index(std::max<std::size_t>(owned, 1)));
    avg_views_.assign(n, param_view<const T>());
    for (std::size_t i = 0; i < n; ++i)
      if (owner_[i] == me) avg_views_[i] = averaged(i);
    for (int k = 0; k < 2; ++k) {
      if constexpr (direct) {
        send_[k] = be_->template allocate<T>(index(std::max<std::size_t>(largest, 1)));
        recv_[k] = be_->template allocate<T>(index(std::max<std::size_t>(largest * std::size_t(p), 1)));
      } else {
        send_[k].assign(largest, T(0));
        recv_[k].assign(largest * std::size_t(p), T(0));
      }
    }
    counts_.assign(std::size_t(p), 0);
    counts2_.assign(std::size_t(p), 0);
    // Where each tensor's three measures land in the gathered numbers.
    std::vector<std::size_t> tensors(std::size_t(p), 0), at(std::size_t(p), 0);
    for (std::size_t i = 0; i < n; ++i) ++tensors[std::size_t(owner_[i])];
    measure_counts_.assign(std::size_t(p), 0);
    for (int q = 0; q < p; ++q) {
      measure_counts_[std::size_t(q)] = 3 * tensors[std::size_t(q)] * sizeof(double);
      if (q > 0) at[std::size_t(q)] = at[std::size_t(q - 1)] + 3 * tensors[std::size_t(q - 1)];
    }
    measure_at_.assign(n, 0);
    for (std::size_t i = 0; i < n; ++i) {
      measure_at_[i] = at[std::size_t(owner_[i])];
      at[std::size_t(owner_[i])] += 3;
    }
    requests_.resize(2);
  }

  // Where the averaged gradient of owned tensor i lives: a dense matrix in
  // the layout of the tensor's weights (so that a policy whose sums depend
  // on the layout sees what it would see from one process stepping a
  // gradient laid out as its weights).
  matrix_view<T> averaged_matrix(std::size_t i) {
    const auto w = entries()[i].w.elements();
    T* at = avg_.data() + offset_[i];
    const bool by_columns = !entries()[i].w.is_tensor() && w.cols_contiguous() && !w.rows_contiguous();
    return by_columns ? col_major_view(at, w.rows(), w.cols(), -1, Backend::space)
                      : row_major_view(at, w.rows(), w.cols(), -1, Backend::space);
  }
  param_view<const T> averaged(std::size_t i) {
    if (entries()[i].w.is_tensor()) return inner_type::like(param_view<const T>(entries()[i].w), averaged_matrix(i));
    return param_view<const T>(as_const(averaged_matrix(i)));
  }

  // A tensor's elements into a buffer, row by row, and back.
  void pack(matrix_view<const T> src, T* dst) {
    const auto to = row_major_view(dst, src.rows(), src.cols(), -1, comm_space);
    if constexpr (direct)
      be_->copy(src, to);
    else
      be_->copy_to_host(src, to);
  }
  void unpack(const T* src, matrix_view<T> dst) {
    const auto from = as_const(row_major_view(const_cast<T*>(src), dst.rows(), dst.cols(), -1, comm_space));
    if constexpr (direct)
      be_->copy(from, dst);
    else
      be_->copy_from_host(from, dst);
  }

  // Step (2) for bucket b: each rank's gradients of the tensors rank q owns
  // go to q, which adds them in the order of the ranks and divides by N.
  void reduce_bucket(std::size_t b, const param_view<const T>* grads) {
    const int p = comm_->size(), me = comm_->rank();
    const auto& k = buckets_[b];
    auto& send = send_[0];
    auto& recv = recv_[0];
    std::size_t at = 0;
    for (int q = 0; q < p; ++q)
      for (index i = k.first; i < k.last; ++i)
        if (owner_[std::size_t(i)] == q) {
          const auto g = grads[i].elements();
          pack(g, send.data() + at);
          at += std::size_t(g.size());
        }
    const std::size_t mine = k.elems[std::size_t(me)];
    for (int q = 0; q < p; ++q) {
      counts_[std::size_t(q)] = k.elems[std::size_t(q)] * sizeof(T);
      counts2_[std::size_t(q)] = mine * sizeof(T);
    }
    all_to_all(*comm_, send.data(), counts_.data(), recv.data(), counts2_.data());
    const T ranks = T(p);
    std::size_t o = 0;
    for (index i = k.first; i < k.last; ++i) {
      if (owner_[std::size_t(i)] != me) continue;
      const auto w = entries()[std::size_t(i)].w.elements();
      const std::size_t m = std::size_t(w.size());
      if constexpr (direct) {
        // ((g_0 + g_1) + ...) / N with the backend's elementwise maps.
        const auto out = averaged_matrix(std::size_t(i));
        const auto part = [&](int q) {
          return as_const(row_major_view(recv.data() + std::size_t(q) * mine + o, w.rows(), w.cols(), -1, comm_space));
        };
        be_->copy(part(0), out);
        for (int q = 1; q < p; ++q) be_->map(polar::detail::add_fn<T>{}, out, as_const(out), part(q));
        be_->map(polar::detail::divide_fn<T>{ranks}, out, as_const(out));
      } else {
        T* sum = send.data();  // the send buffer is free again: the sums go there
        for (std::size_t e = 0; e < m; ++e) {
          T s = recv[o + e];
          for (int q = 1; q < p; ++q) s += recv[std::size_t(q) * mine + o + e];
          sum[e] = s / ranks;
        }
        unpack(sum, averaged_matrix(std::size_t(i)));
      }
      o += m;
    }
  }

  // Step (3): three numbers per tensor from its owner to every rank.
  // The gathered numbers arrive in rank order, each rank's tensors in
  // order: tensor i's are at measure_at_[i] (plan()).
  void share_measures(std::vector<double>& measured) {
    const int me = comm_->rank();
    const std::size_t n = entries().size();
    mine_.clear();
    for (std::size_t i = 0; i < n; ++i)
      if (owner_[i] == me) mine_.insert(mine_.end(), measured.begin() + long(3 * i), measured.begin() + long(3 * i + 3));
    all_.resize(3 * n);
    all_gather_host(*comm_, mine_.data(), mine_.size() * sizeof(double), all_.data(), measure_counts_.data());
    for (std::size_t i = 0; i < n; ++i)
      for (std::size_t k = 0; k < 3; ++k) measured[3 * i + k] = all_[measure_at_[i] + k];
  }

  // The optimizer's step counts, to undo a step that failed on some rank.
  struct counts_t {
    long steps, zeroed_steps;
    long long zeroed_entries;
    std::vector<long> groups;
  };
  counts_t counters() const {
    counts_t c{inner_.steps_, inner_.zeroed_steps_, inner_.zeroed_entries_, {}};
    for (const auto& g : inner_.groups_) c.groups.push_back(g->steps_);
    return c;
  }
  void restore(const counts_t& c) {
    inner_.steps_ = c.steps;
    inner_.zeroed_steps_ = c.zeroed_steps;
    inner_.zeroed_entries_ = c.zeroed_entries;
    for (std::size_t k = 0; k < c.groups.size(); ++k) inner_.groups_[k]->steps_ = c.groups[k];
  }

  // After tensor i's turn in the steps: when it ends a bucket, that
  // bucket's weights start travelling. i = inner_type::no_slot comes once,
  // before the first tensor.
  void after_step(std::size_t i) {
    if (i == inner_type::no_slot) {
      stepping_ = true;
      return;
    }
    next_ = i + 1;
    const std::size_t b = gathers_started_;
    if (b >= buckets_.size() || index(i) + 1 != buckets_[b].last) return;
    if (gathers_started_ >= gathers_finished_ + 2) finish_gather(gathers_finished_);
    start_gather(b);
    if (!overlap) finish_gather(b);
  }

  // Step (4) for bucket b: the owners' weights to every rank.
  void start_gather(std::size_t b) {
    const int p = comm_->size(), me = comm_->rank();
    const auto& k = buckets_[b];
    auto& send = send_[b % 2];
    std::size_t at = 0;
    for (index i = k.first; i < k.last; ++i)
      if (owner_[std::size_t(i)] == me) {
        const auto w = as_const(entries()[std::size_t(i)].w.elements());
        pack(w, send.data() + at);
        at += std::size_t(w.size());
      }
    auto& counts = gather_counts_[b % 2];
    counts.assign(std::size_t(p), 0);
    for (int q = 0; q < p; ++q) counts[std::size_t(q)] = k.elems[std::size_t(q)] * sizeof(T);
    requests_[b % 2] = comm_->start_all_gather(send.data(), at * sizeof(T), recv_[b % 2].data(), counts.data());
    ++gathers_started_;
  }
  void finish_gather(std::size_t b) {
    const int p = comm_->size(), me = comm_->rank();
    comm_->wait(requests_[b % 2]);
    const auto& k = buckets_[b];
    const auto& recv = recv_[b % 2];
    std::size_t at = 0;
    for (int q = 0; q < p; ++q)
      for (index i = k.first; i < k.last; ++i)
        if (owner_[std::size_t(i)] == q) {
          const auto w = entries()[std::size_t(i)].w.elements();
          if (q != me) unpack(recv.data() + at, w);
          at += std::size_t(w.size());
        }
    gathers_finished_ = b + 1;
  }

  Backend* be_;
  Communicator* comm_;
  inner_type inner_;
  bool sharded_ = false;
  std::uint64_t fingerprint_ = 0;
  std::vector<int> owner_;
  std::vector<bucket_plan> buckets_;
  std::vector<std::size_t> offset_;  // of an owned tensor's averaged gradient in avg_
  typename Backend::template buffer<T> avg_;
  std::vector<param_view<const T>> avg_views_;
  staging send_[2], recv_[2];
  std::vector<std::size_t> counts_, counts2_, gather_counts_[2];
  std::vector<typename Communicator::request> requests_;
  std::vector<double> mine_, all_;
  std::vector<std::size_t> measure_counts_, measure_at_, small_counts_;
  std::vector<header> headers_;
  std::size_t gathers_started_ = 0, gathers_finished_ = 0;
  bool stepping_ = false;  // the step reached the tensors' steps
  std::size_t next_ = 0;   // the tensor whose turn comes next
  std::vector<std::uint64_t> status_;
};

}  // namespace polar::dist
