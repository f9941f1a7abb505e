// polar/optimizer.hpp: one optimizer for a whole model.
//
// A model has many tensors: embeddings, attention and MLP matrices, stacks of
// expert matrices, convolution kernels, norms, biases, a head. An optimizer
// holds views of all of them, in groups. Each group has a policy (any of
// polar's: SGD, momentum, AdamW, Muon with any orthogonalizer, Riemannian
// compositions, manifold Muon, MD gains, guards, in any nesting), a rule
// that says which tensors it takes, and schedules for its learning rates and
// weight decays. One step() steps every tensor of every group:
//
//   polar::optimizer<polar::backend::eigen, float> opt(be);
//   opt.add_group("hidden", polar::muon_direction<>{}, polar::rule::matrices() && !polar::rule::name("embed*"));
//   opt.add_group("rest", polar::adamw_direction{}, polar::rule::all());
//   opt.group("hidden").lr_schedule = polar::schedule::cosine(10000, 0.1, 200);
//   opt.clip_norm = 1.0;                         // torch's clip_grad_norm_, over all groups
//   opt.add("embed", polar::make_view(e));       // -> rest (the first rule that takes it)
//   opt.add("fc1.weight", polar::make_view(w1)); // -> hidden
//   ...
//   opt.step({g_e, g_w1, ...});                  // gradients in the order of add()
//
// A step, in order:
//
//   1. the gradients' count and shapes, and every group's hyperparameters
//      (after its schedules) are checked;
//   2. every gradient is checked for NaN and infinity; the optimizer's
//      nonfinite policy decides: raise (non_finite_error naming the tensors,
//      nothing written), skip (nothing written, skipped() counts it, the
//      schedules do not move), or zero (the bad entries count as 0);
//   3. clipping: with clip_norm > 0, every gradient is scaled by
//      min(1, clip_norm / (|g|_2 + 1e-6)), |g|_2 the norm of all gradients
//      together (torch.nn.utils.clip_grad_norm_'s formula); a group's own
//      clip_norm then does the same over its tensors;
//   4. each group's policy steps its tensors, in the order they were added.
//
// So a refusal in 1 or 2 writes nothing. In a deferred_checks scope
// (polar/deferred.hpp), with the raise policy, 2 and the clipping of 3
// (global and the groups') are queued on the backend and nothing is read
// back; the error then
// comes from check(). A policy that refuses a step later
// (a retraction that cannot take a point, an SVD that does not converge)
// leaves its own tensor and state as they were, but tensors stepped before
// it in that step keep their step; the error names the tensor.
//
// Memory: a policy's state holds what its algorithm remembers (momentum,
// moments, D and the gains). What a step needs only while it runs
// (orthogonalizer buffers, tangent vectors, the copy taken before a step
// that may be refused) lives in one scratch_pool the optimizer shares among
// all its tensors (polar/core/scratch.hpp), sized by the largest tensor that
// needs it; a clipped or zeroed gradient is written into one more buffer of
// the largest gradient's size. After the first step, a step allocates no
// heap memory. state_bytes() and scratch_bytes() say what each holds.
//
// Orientation: polar takes a weight matrix stored (out x in), rows the
// output features, as torch's nn.Linear stores it; Muon's scale rules read
// rows and columns so. A matrix stored (in x out) is added as
// add(name, w.transpose()) (a view with swapped strides: no copy), and its
// gradient is passed transposed the same way, so that its policy sees it
// (out x in).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <initializer_list>
#include <limits>
#include <memory>
#include <string>
#include <type_traits>
#include <typeinfo>
#include <utility>
#include <vector>
#if defined(__GNUG__)
#include <cxxabi.h>
#endif

#include "polar/core/detail/gradient_check.hpp"
#include "polar/backend/concept.hpp"
#include "polar/checkpoint.hpp"
#include "polar/core/check.hpp"
#include "polar/core/error.hpp"
#include "polar/core/param_view.hpp"
#include "polar/core/scratch.hpp"
#include "polar/core/tensor.hpp"
#include "polar/hyperparameters.hpp"
#include "polar/nonfinite.hpp"
#include "polar/schedule.hpp"

namespace polar {

namespace dist {
template <class Backend, class T, class Communicator>
class sharded_optimizer;
}  // namespace dist

/// The shape of a tensor as rules see it.
struct param_shape {
  int rank = 0;          ///< 0 to 5 (a matrix view is rank 2)
  index extent[5] = {};  ///< extents in C order
  bool matrix_like = false;  ///< a matrix, stack or kernel with at least two rows and two columns
  /// The number of elements.
  index size() const noexcept {
    index n = 1;
    for (int d = 0; d < rank; ++d) n *= extent[d];
    return n;
  }
};

/// Which tensors a group takes: a predicate of the tensor's name and shape.
/// Combine with &&, || and !.
class rule {
 public:
  /// A rule from a predicate (name, shape) -> bool, with a description for
  /// messages.
  rule(std::function<bool(const std::string&, const param_shape&)> f, std::string describe)
      : f_(std::move(f)), describe_(std::move(describe)) {}
  /// Whether the rule takes the tensor.
  bool operator()(const std::string& name, const param_shape& shape) const { return f_(name, shape); }
  /// What the rule is, for messages: "name(embed*) && matrices".
  const std::string& describe() const noexcept { return describe_; }

  /// Every tensor.
  static rule all() {
    return rule([](const std::string&, const param_shape&) { return true; }, "all");
  }
  /// Tensors whose name matches the glob pattern: '*' any run of
  /// characters (dots too), '?' any one character, everything else itself.
  static rule name(std::string pattern) {
    std::string d = "name(" + pattern + ")";
    return rule([p = std::move(pattern)](const std::string& n, const param_shape&) { return glob_match(p, n); },
                std::move(d));
  }
  /// Tensors with exactly these names.
  static rule names(std::vector<std::string> list) {
    std::string d = "names(";
    for (std::size_t i = 0; i < list.size(); ++i) d += (i ? ", " : "") + list[i];
    d += ")";
    return rule(
        [l = std::move(list)](const std::string& n, const param_shape&) {
          for (const auto& x : l)
            if (x == n) return true;
          return false;
        },
        std::move(d));
  }
  /// Matrices, stacks of them and convolution kernels with at least two
  /// rows and two columns: what Muon takes.
  static rule matrices() {
    return rule([](const std::string&, const param_shape& s) { return s.matrix_like; }, "matrices");
  }
  /// Everything else: scalars, vectors, 1 x n and n x 1 matrices.
  static rule vectors() {
    return rule([](const std::string&, const param_shape& s) { return !s.matrix_like; }, "vectors");
  }
  /// Tensors of rank r (a matrix view has rank 2).
  static rule rank(int r) {
    return rule([r](const std::string&, const param_shape& s) { return s.rank == r; },
                "rank(" + std::to_string(r) + ")");
  }
  /// Tensors for which pred(name, shape) holds.
  static rule where(std::function<bool(const std::string&, const param_shape&)> pred,
                    std::string describe = "where(...)") {
    return rule(std::move(pred), std::move(describe));
  }

  /// Both rules.
  friend rule operator&&(rule a, rule b) {
    std::string d = "(" + a.describe_ + " && " + b.describe_ + ")";
    return rule([a = std::move(a.f_), b = std::move(b.f_)](const std::string& n,
                                                           const param_shape& s) { return a(n, s) && b(n, s); },
                std::move(d));
  }
  /// Either rule.
  friend rule operator||(rule a, rule b) {
    std::string d = "(" + a.describe_ + " || " + b.describe_ + ")";
    return rule([a = std::move(a.f_), b = std::move(b.f_)](const std::string& n,
                                                           const param_shape& s) { return a(n, s) || b(n, s); },
                std::move(d));
  }
  /// Not the rule.
  friend rule operator!(rule a) {
    std::string d = "!" + a.describe_;
    return rule([a = std::move(a.f_)](const std::string& n, const param_shape& s) { return !a(n, s); }, std::move(d));
  }

  /// Whether text matches the glob pattern ('*' and '?').
  static bool glob_match(const std::string& pattern, const std::string& text) {
    std::size_t p = 0, t = 0, star = std::string::npos, mark = 0;
    while (t < text.size()) {
      if (p < pattern.size() && (pattern[p] == '?' || pattern[p] == text[t])) {
        ++p;
        ++t;
      } else if (p < pattern.size() && pattern[p] == '*') {
        star = p++;
        mark = t;
      } else if (star != std::string::npos) {
        p = star + 1;
        t = ++mark;
      } else {
        return false;
      }
    }
    while (p < pattern.size() && pattern[p] == '*') ++p;
    return p == pattern.size();
  }

 private:
  std::function<bool(const std::string&, const param_shape&)> f_;
  std::string describe_;
};

namespace detail {

// Whether a policy steps stacks of matrices itself (Muon): then a group
// hands it stacks; otherwise one matrix at a time.
template <class P, class B, class T, class = void>
struct steps_stacks : std::false_type {};
template <class P, class B, class T>
struct steps_stacks<P, B, T,
                    std::void_t<decltype(std::declval<const P&>().step(
                        std::declval<B&>(), std::declval<batch_view<T>>(), std::declval<batch_view<const T>>(),
                        std::declval<typename P::template state<B, T>&>()))>> : std::true_type {};

// Whether a policy orthogonalizes (Muon and its family, manifold Muon, a
// Stiefel geometry), directly or through the direction, geometry or
// optimizer it wraps: what dist's balancer counts as cubic work.
template <class P, class = void>
struct has_orthogonalizer : std::false_type {};
template <class P>
struct has_orthogonalizer<P, std::void_t<decltype(std::declval<const P&>().orthogonalizer)>> : std::true_type {};
template <class P>
constexpr bool orthogonalizes();
template <class P, class = void>
struct wraps_direction : std::false_type {};
template <class P>
struct wraps_direction<P, std::void_t<decltype(std::declval<const P&>().direction)>>
    : std::bool_constant<orthogonalizes<std::decay_t<decltype(std::declval<const P&>().direction)>>()> {};
template <class P, class = void>
struct wraps_geometry : std::false_type {};
template <class P>
struct wraps_geometry<P, std::void_t<decltype(std::declval<const P&>().geometry)>>
    : std::bool_constant<orthogonalizes<std::decay_t<decltype(std::declval<const P&>().geometry)>>()> {};
template <class P, class = void>
struct wraps_optimizer : std::false_type {};
template <class P>
struct wraps_optimizer<P, std::void_t<decltype(std::declval<const P&>().optimizer)>>
    : std::bool_constant<orthogonalizes<std::decay_t<decltype(std::declval<const P&>().optimizer)>>()> {};
template <class P>
constexpr bool orthogonalizes() {
  return has_orthogonalizer<P>::value || wraps_direction<P>::value || wraps_geometry<P>::value ||
         wraps_optimizer<P>::value;
}

template <class P, class = void>
struct has_check_member : std::false_type {};
template <class P>
struct has_check_member<P, std::void_t<decltype(std::declval<const P&>().check(""))>> : std::true_type {};

/// T's name as the compiler spells it in source ("polar::sgd_direction"),
/// for messages; the mangled name where the ABI offers no demangler.
template <class T>
std::string type_name() {
  const char* raw = typeid(T).name();
#if defined(__GNUG__)
  int status = 0;
  char* readable = abi::__cxa_demangle(raw, nullptr, nullptr, &status);
  if (status == 0 && readable) {
    std::string out(readable);
    std::free(readable);
    return out;
  }
  std::free(readable);
#endif
  return raw;
}

/// FNV-1a of a group's name: what a checkpoint records of a tensor's group.
inline std::int64_t name_hash(const std::string& s) {
  std::uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return std::int64_t(h & 0x7fffffffffffffffull);
}

/// x * scale, or 0 where x is NaN or infinite when zero is set.
template <class T>
struct clip_clean_fn {
  T scale;
  bool zero;
  POLAR_HOST_DEVICE T operator()(T x) const {
    const T d = x - x;
    return zero && !(d == d) ? T(0) : T(x * scale);
  }
};
/// The global clipping factor min(1, clip / (*norm + 1e-6)), computed on
/// the backend from the norm it holds there (a deferred step); NaN for a
/// norm that is not finite, which the deferred check of the factor sees.
template <class T>
struct clip_factor_fn {
  double clip;
  const T* norm;
  POLAR_HOST_DEVICE void operator()(T& f) const {
    const double n = double(*norm);
    const double q = clip / (n + 1e-6);
    f = n - n == 0 ? T(q < 1 ? q : 1) : T(n - n);
  }
};
/// A group's clipping factor on the backend (a deferred step):
/// global min(1, clip / (global * *norm + 1e-6)), global the optimizer's
/// factor; as the eager step's.
template <class T>
struct group_clip_factor_fn {
  double clip;
  const T* global;
  const T* norm;
  POLAR_HOST_DEVICE void operator()(T& f) const {
    const double g = double(*global), q = clip / (g * double(*norm) + 1e-6);
    f = T(g * (q < 1 ? q : 1));
  }
};
/// x * (*factor), the factor in backend memory (a deferred step's clipping).
template <class T>
struct scale_by_fn {
  const T* factor;
  POLAR_HOST_DEVICE T operator()(T x) const { return T(x * *factor); }
};

/// x^2, or 0 where x is NaN or infinite.
template <class T>
struct clean_square_fn {
  POLAR_HOST_DEVICE T operator()(T x) const {
    const T d = x - x;
    return d == d ? T(x * x) : T(0);
  }
};

}  // namespace detail

/// One group of an optimizer: its name, rule, schedules and clipping; the
/// policy is reached with optimizer::settings<Policy>(name).
template <class Backend, class T>
class optimizer_group {
 public:
  virtual ~optimizer_group() = default;
  optimizer_group(const optimizer_group&) = delete;
  optimizer_group& operator=(const optimizer_group&) = delete;

  /// The factor of every learning rate in the policy, by step.
  polar::schedule lr_schedule = polar::schedule::constant();
  /// The factor of every weight decay in the policy, by step.
  polar::schedule weight_decay_schedule = polar::schedule::constant();
  /// With clip_norm > 0, the group's gradients are scaled together by
  /// min(1, clip_norm / (|g|_2 + 1e-6)) after the optimizer's own clipping.
  double clip_norm = 0;

  /// The group's name.
  const std::string& name() const noexcept { return name_; }
  /// Its rule.
  const polar::rule& rule() const noexcept { return rule_; }
  /// Steps this group took (the schedules' position).
  long steps() const noexcept { return steps_; }
  /// Number of tensors in the group.
  index size() const noexcept { return index(members_.size()); }
  /// The positions (in the order of add()) of the group's tensors.
  const std::vector<index>& members() const noexcept { return members_; }
  /// The policy's type, for messages ("polar::muon_direction<polar::newton_schulz, void>").
  virtual std::string policy_name() const = 0;
  /// Bytes of the backend's memory the group's states hold: the buffers
  /// its policy remembers from step to step (what a checkpoint keeps).
  virtual std::size_t state_bytes() = 0;
  /// The learning rates and weight decays the step about to be taken will
  /// use (the settings times the schedules at steps()), as for_each_hyperparameter lists them.
  virtual std::vector<std::pair<std::string, double>> scheduled_hyperparameters() const = 0;

 protected:
  /// A group named name that takes what r takes.
  optimizer_group(std::string name, polar::rule r) : name_(std::move(name)), rule_(std::move(r)) {}

  template <class, class>
  friend class optimizer;
  template <class, class, class>
  friend class dist::sharded_optimizer;
  /// Makes the state of a tensor added to the group.
  /// Returns the state's slot.
  virtual std::size_t add_state(Backend& be, const std::string& name, const param_view<T>& w) = 0;
  /// Work of one step of a tensor of this shape, for dist's balancer: its
  /// multiply-adds when the policy orthogonalizes, else its elements times 10.
  virtual double step_cost(const param_view<T>& w) const = 0;
  /// The live policy for the next step: the settings times the schedules, checked.
  virtual void prepare(const char* op) = 0;
  /// Steps the group's k-th tensor with the live policy.
  virtual void step_member(Backend& be, std::size_t k, const param_view<T>& w, const param_view<const T>& g) = 0;
  /// Points the states' scratch at the pool's.
  virtual void share(scratch_pool& pool) = 0;
  /// Puts the k-th state into ck under name.
  virtual void put(Backend& be, checkpoint& ck, const std::string& name, std::size_t k) const = 0;
  /// Checks that ck's entry name fits the k-th state; writes nothing.
  virtual void check_load(Backend& be, const checkpoint& ck, const std::string& name, std::size_t k) = 0;
  /// Reads the k-th state from ck's entry name.
  virtual void get(Backend& be, const checkpoint& ck, const std::string& name, std::size_t k) = 0;

  std::string name_;             ///< the group's name
  polar::rule rule_;             ///< which tensors it takes
  long steps_ = 0;               ///< steps taken: the schedules' position
  std::vector<index> members_;   ///< its tensors' positions in the optimizer
};

namespace detail {

template <class Backend, class T, class Policy>
class group_of final : public optimizer_group<Backend, T> {
 public:
  using state_type = typename Policy::template state<Backend, T>;
  group_of(std::string name, Policy p, polar::rule r)
      : optimizer_group<Backend, T>(std::move(name), std::move(r)), settings(std::move(p)), live(settings) {}

  Policy settings;  // what the user configured
  Policy live;      // settings times the schedules: what steps
  std::vector<state_type> states;

  std::string policy_name() const override { return type_name<Policy>(); }

  std::vector<std::pair<std::string, double>> scheduled_hyperparameters() const override {
    Policy p = settings;
    scale(p, this->lr_schedule(this->steps_), this->weight_decay_schedule(this->steps_));
    std::vector<std::pair<std::string, double>> out;
    for_each_hyperparameter(p, [&](hyperparameter, const std::string& path, double& v) { out.emplace_back(path, v); });
    return out;
  }

 private:
  static constexpr bool stacks = steps_stacks<Policy, Backend, T>::value;

  static void scale(Policy& p, double lr_factor, double wd_factor) {
    detail::for_each_hyperparameter_value(p, [&](hyperparameter kind, double& v) {
      v *= kind == hyperparameter::lr ? lr_factor : wd_factor;
    });
  }

  // The matrix a policy that steps one matrix at a time sees.
  template <class U>
  static matrix_view<U> one_matrix(const char* op, const std::string& name, const param_view<U>& w) {
    if (!w.is_tensor()) return w.matrix();
    if (w.tensor().rank() < 2) return w.elements();
    const auto b = as_matrix_stack(op, w.tensor());
    if (b.count() != 1)
      detail::raise<unsupported_error>(op, "'", name, "' is a stack of ", b.count(), " matrices (",
                                       w.shape_string(), ") but the group's policy steps one matrix at a time; "
                                       "add each matrix as its own tensor, or give the stack to Muon");
    return b.matrix(0);
  }

  std::size_t add_state(Backend& be, const std::string& name, const param_view<T>& w) override {
    constexpr const char* op = "polar::optimizer::add";
    if constexpr (stacks) {
      states.push_back(settings.init(be, w.stack(op)));
    } else {
      states.push_back(settings.init(be, one_matrix(op, name, w)));
    }
    return states.size() - 1;
  }
  double step_cost(const param_view<T>& w) const override {
    const double elements = double(w.elements().size());
    if (!orthogonalizes<Policy>() || !w.matrix_like()) return 10 * elements;
    // Newton-Schulz on each m x n matrix (s = min, l = max): per
    // iteration X X^T (s^2 l / 2 with syrk), A^2 (s^3) and B X (s^2 l).
    const auto b = w.stack("polar::optimizer::step_cost");
    const double s = double(std::min(b.rows(), b.cols())), l = double(std::max(b.rows(), b.cols()));
    return double(b.count()) * 5 * (1.5 * s * s * l + s * s * s) + 10 * elements;
  }
  void prepare(const char* op) override {
    live = settings;
    scale(live, this->lr_schedule(this->steps_), this->weight_decay_schedule(this->steps_));
    if constexpr (has_check_member<Policy>::value) live.check(op);
  }
  void step_member(Backend& be, std::size_t k, const param_view<T>& w, const param_view<const T>& g) override {
    constexpr const char* op = "polar::optimizer::step";
    if constexpr (stacks)
      live.step(be, w.stack(op), g.stack(op), states[k]);
    else
      live.step(be, one_matrix(op, "", w), one_matrix(op, "", g), states[k]);
  }
  void share(scratch_pool& pool) override {
    for (auto& s : states) detail::share_scratch(s, pool);
  }
  void put(Backend& be, checkpoint& ck, const std::string& name, std::size_t k) const override {
    ck.put_state(be, name, states[k]);
  }
  void check_load(Backend& be, const checkpoint& ck, const std::string& name, std::size_t k) override {
    ck.check_state(be, name, states[k]);
  }
  void get(Backend& be, const checkpoint& ck, const std::string& name, std::size_t k) override {
    ck.get_state(be, name, states[k]);
  }
  std::size_t state_bytes() override {
    std::size_t n = 0;
    for (auto& s : states) n += visited_bytes(s);
    return n;
  }

  // Bytes of the buffers a state lists through visit(): what it remembers.
  struct byte_counter {
    std::size_t n = 0;
    template <class Buffer>
    void buffer(const char*, Buffer& b) {
      n += buffer_bytes(b);
    }
    template <class Buffer>
    void buffers(const char*, std::vector<Buffer>& bs) {
      for (auto& b : bs) n += buffer_bytes(b);
    }
    template <class V>
    void shape(const char*, V&) {}
    template <class V>
    void value(const char*, V&) {}
    template <class S>
    void nested(const char*, S& s) {
      s.visit(*this);
    }
  };
  static std::size_t visited_bytes(state_type& s) {
    byte_counter c;
    s.visit(c);
    return c.n;
  }
};

}  // namespace detail

/// A model's tensors in groups, each with any policy (see the header comment).
/// @tparam Backend the backend the tensors live on
/// @tparam T their scalar type
template <class Backend, class T>
class optimizer {
 public:
  /// What step() does with a gradient that holds NaN or infinity.
  nonfinite_policy nonfinite = nonfinite_policy::raise;
  /// With clip_norm > 0, every gradient is scaled by min(1, clip_norm /
  /// (|g|_2 + 1e-6)), |g|_2 the norm of all gradients together.
  double clip_norm = 0;

  /// An empty optimizer on be (which must outlive it).
  explicit optimizer(Backend& be) : be_(&be) {}
  optimizer(const optimizer&) = delete;
  optimizer& operator=(const optimizer&) = delete;

  /// Adds a group with a policy and the rule that picks its tensors; rules
  /// are tried in the order groups were added. Returns the group.
  /// @throws value_error for a name already used, or after tensors were added.
  template <class Policy>
  optimizer_group<Backend, T>& add_group(std::string name, Policy policy, polar::rule r = polar::rule::all()) {
    constexpr const char* op = "polar::optimizer::add_group";
    for (const auto& g : groups_)
      if (g->name() == name) detail::raise<value_error>(op, "a group named '", name, "' is already there");
    if (!entries_.empty())
      detail::raise<value_error>(op, "group '", name, "' comes after tensors were added; add every group first, "
                                 "so that each rule sees every tensor");
    if constexpr (detail::has_check_member<Policy>::value) policy.check(op);
    groups_.push_back(std::make_unique<detail::group_of<Backend, T, Policy>>(std::move(name), std::move(policy),
                                                                          std::move(r)));
    return *groups_.back();
  }

  /// Adds a tensor to the first group whose rule takes it, makes its state
  /// (W is read; MD policies factor it) and returns its position (the order
  /// step() expects its gradient in).
  /// @throws value_error (a name already used, no group takes it), and
  ///         what the policy's init throws for a tensor it cannot step.
  index add(std::string name, param_view<T> w) { return add_to(std::move(name), w, nullptr); }
  /// Adds a tensor to the named group, whatever the rules say.
  index add(std::string name, param_view<T> w, const std::string& group) {
    return add_to(std::move(name), w, &group_named("polar::optimizer::add", group));
  }

  /// Number of tensors.
  index size() const noexcept { return index(entries_.size()); }
  /// Number of groups.
  index groups() const noexcept { return index(groups_.size()); }
  /// The name a tensor was added under.
  const std::string& name(index i) const { return entries_.at(std::size_t(i)).name; }
  /// The group tensor i is in.
  optimizer_group<Backend, T>& group_of(index i) const { return *groups_[entries_.at(std::size_t(i)).group]; }
  /// Group k, in the order add_group() added them.
  optimizer_group<Backend, T>& group_at(index k) const { return *groups_.at(std::size_t(k)); }
  /// The group of that name. @throws value_error naming the groups there are.
  optimizer_group<Backend, T>& group(const std::string& name) const { return group_named("polar::optimizer::group", name); }
  /// The group's policy settings (change them between steps freely; the
  /// schedules scale the learning rates and weight decays set here).
  /// @throws value_error when the group has another policy type.
  template <class Policy>
  Policy& settings(const std::string& group_name) {
    return typed<Policy>("polar::optimizer::settings", group_name).settings;
  }
  /// The state of tensor i, whose group's policy is Policy.
  template <class Policy>
  typename Policy::template state<Backend, T>& state_of(index i) {
    const auto& e = entries_.at(std::size_t(i));
    if (!e.owned())
      detail::raise<value_error>("polar::optimizer::state_of", "'", e.name, "' is owned by another rank; its state "
                                 "is there");
    return typed<Policy>("polar::optimizer::state_of", groups_[e.group]->name()).states[e.slot];
  }
  /// Steps taken.
  long steps() const noexcept { return steps_; }
  /// Steps skipped by the skip policy.
  long skipped() const noexcept { return skipped_; }
  /// Steps taken with non-finite entries zeroed (zero policy), and the entries zeroed.
  long zeroed_steps() const noexcept { return zeroed_steps_; }
  /// Entries zeroed by the zero policy over all steps.
  long long zeroed_entries() const noexcept { return zeroed_entries_; }
  /// The norm of all gradients together at the last step (before
  /// clipping; 0 when nothing asked for it: no clipping configured; NaN
  /// after a clipped step in a deferred_checks scope, where the norm stayed
  /// on the device).
  double last_norm() const noexcept { return last_norm_; }

  /// Bytes of the backend's memory the groups' states hold: what the
  /// policies remember (the buffers a checkpoint keeps).
  std::size_t state_bytes() {
    std::size_t n = 0;
    for (auto& g : groups_) n += g->state_bytes();
    return n;
  }
  /// Bytes of the backend's memory in the shared scratch: the policies'
  /// step buffers and the clipped-gradient buffer.
  std::size_t scratch_bytes() const { return pool_.bytes() + detail::buffer_bytes(clip_); }

  /// One step of every tensor, gradients in the order of add() (see the
  /// header comment for what is checked and in which order).
  /// @throws shape_error (count, shapes), value_error (hyperparameters,
  ///         schedules), non_finite_error (policy raise, naming the tensors);
  ///         nothing is written when they throw.
  void step(const std::vector<param_view<const T>>& grads) { step(grads.data(), grads.size()); }
  /// The same, from a braced list.
  void step(std::initializer_list<param_view<const T>> grads) { step(grads.begin(), grads.size()); }
  /// The same, from n gradients at grads.
  void step(const param_view<const T>* grads, std::size_t n) {
    step_with("polar::optimizer::step", grads, n, [](std::vector<double>&) {}, [](std::size_t) {}, true);
  }

  /// Puts every tensor's weights (under prefix + its name), its group and
  /// its state (prefix + name + "/state"), every group's step count, and
  /// the optimizer's counts into ck.
  void save(checkpoint& ck, const std::string& prefix = "") const {
    ck.put_integer(prefix + "steps", steps_);
    ck.put_integer(prefix + "skipped", skipped_);
    ck.put_integer(prefix + "zeroed_steps", zeroed_steps_);
    ck.put_integer(prefix + "zeroed_entries", zeroed_entries_);
    for (const auto& g : groups_) ck.put_integer(prefix + "group/" + g->name() + "/steps", g->steps_);
    for (const auto& e : entries_) {
      if (!e.owned()) continue;  // dist: its owner saves it
      ck.put(*be_, prefix + e.name, as_const(e.w.elements()));
      ck.put_integer(prefix + e.name + "/group", detail::name_hash(groups_[e.group]->name()));
      groups_[e.group]->put(*be_, ck, prefix + e.name + "/state", e.slot);
    }
  }

  /// Restores what save() wrote into an optimizer with the same tensors in
  /// the same groups: the weights (written into the tensors' own memory),
  /// the states, the step counts (the schedules' positions). Everything is
  /// checked before anything is written.
  /// @throws format_error (a missing entry, another scalar type),
  ///         shape_error (a tensor of another shape, in another group, or
  ///         whose state does not fit its policy: naming the tensor).
  void load(const checkpoint& ck, const std::string& prefix = "") {
    constexpr const char* op = "polar::optimizer::load";
    const auto steps = ck.get_integer(prefix + "steps");
    const auto skipped = ck.get_integer(prefix + "skipped");
    const auto zs = ck.get_integer(prefix + "zeroed_steps");
    const auto ze = ck.get_integer(prefix + "zeroed_entries");
    std::vector<long> group_steps;
    for (const auto& g : groups_) group_steps.push_back(long(ck.get_integer(prefix + "group/" + g->name() + "/steps")));
    for (const auto& e : entries_) {
      ck.check(op, prefix + e.name, e.w.elements());
      const auto& grp = *groups_[e.group];
      if (!e.owned()) continue;  // dist: the weights only
      if (ck.get_integer(prefix + e.name + "/group") != detail::name_hash(grp.name()))
        detail::raise<shape_error>(op, "'", e.name, "' is in group '", grp.name(),
                                   "' here but in another group in the checkpoint");
      try {
        groups_[e.group]->check_load(*be_, ck, prefix + e.name + "/state", e.slot);
      } catch (const shape_error& x) {
        detail::raise<shape_error>(op, "the state of '", e.name, "' (group '", grp.name(), "') does not fit: ",
                                   x.what());
      }
    }
    for (auto& e : entries_) {
      ck.get(*be_, prefix + e.name, e.w.elements());
      if (e.owned()) groups_[e.group]->get(*be_, ck, prefix + e.name + "/state", e.slot);
    }
    for (std::size_t k = 0; k < groups_.size(); ++k) groups_[k]->steps_ = group_steps[k];
    steps_ = long(steps);
    skipped_ = long(skipped);
    zeroed_steps_ = long(zs);
    zeroed_entries_ = static_cast<long long>(ze);
  }

 private:
  struct entry {
    std::string name;
    param_view<T> w;
    std::size_t group;
    std::size_t slot;  // its state's position in its group; no_slot where another rank owns it
    bool owned() const noexcept { return slot != no_slot; }
  };

  static constexpr std::size_t no_slot = std::size_t(-1);
  template <class, class, class>
  friend class dist::sharded_optimizer;

  // A step of the tensors this optimizer owns (all of them, unless dist's
  // sharded optimizer made it: then grads[i] of a tensor another rank owns
  // is not read). What decides the step for the whole model (which
  // gradients are non-finite, their squared norms, the entries zeroed) is
  // measured on the owned tensors, three numbers a tensor in `measured`;
  // exchange(measured) fills in the other ranks' tensors (a no-op here).
  // Every rank then takes the same decisions from the same numbers, summed
  // in the order of the tensors. after(i) runs after tensor i's turn in the
  // steps (the sharded optimizer sends finished buckets there), and
  // after(no_slot) once before the first: from there on, an error is this
  // rank's own, not one every rank takes from the same numbers.
  //
  // In a deferred_checks scope (may_defer: not the sharded optimizer's
  // steps, which exchange what they measure), with the raise policy, the
  // gradients' checks are queued on the backend instead and the clipping
  // factors computed there (polar/deferred.hpp): the policies' guarded
  // kernels then do nothing when one fails, and a policy that reads back
  // refuses to write. The skip and zero policies decide on the host from
  // what they measure, so they read back, in a scope too.
  template <class Exchange, class After>
  void step_with(const char* op, const param_view<const T>* grads, std::size_t n, Exchange&& exchange,
                 After&& after, bool may_defer = false) {
    if (n != entries_.size())
      detail::raise<shape_error>(op, "got ", n, " gradients for ", entries_.size(), " tensors");
    for (std::size_t i = 0; i < n; ++i) {
      const auto& e = entries_[i];
      if (!e.owned()) continue;
      if (!grads[i].same_shape_as(e.w))
        detail::raise<shape_error>(op, "the gradient of '", e.name, "' is ", grads[i].shape_string(),
                                   " but the tensor is ", e.w.shape_string());
      check_input(op, "G", grads[i].elements());
    }
    for (auto& g : groups_) g->prepare(op);
    bool any_group_clip = false;
    for (const auto& g : groups_) any_group_clip = any_group_clip || g->clip_norm > 0;
    const bool clipping = clip_norm > 0 || any_group_clip;
    detail::deferred_record* const scope = detail::deferred_for<Backend>(op);
    const bool deferred = scope != nullptr && may_defer && nonfinite == nonfinite_policy::raise;
    if (scope != nullptr && !deferred) detail::raise_if_deferred_failed(*be_, op);
    // Finiteness, and the norms where clipping needs them.
    measured_.assign(3 * n, 0.0);
    for (std::size_t i = 0; i < n; ++i) {
      if (!entries_[i].owned()) continue;
      const auto g = grads[i].elements();
      if (deferred) {
        detail::defer_nonfinite(*be_, *scope, op, g, "the gradient of '" + entries_[i].name + "'");
        continue;
      }
      if (!be_->all_finite(g)) {
        measured_[3 * i] = 1;
        if (nonfinite == nonfinite_policy::zero) {
          const auto c = clip_view(g.rows(), g.cols());
          be_->map(detail::nonfinite_indicator_fn<T>{}, c, g);
          measured_[3 * i + 2] = double(static_cast<long long>(double(be_->sum(as_const(c)))));
          if (clipping) {
            be_->map(detail::clean_square_fn<T>{}, c, g);
            measured_[3 * i + 1] = double(be_->sum(as_const(c)));
          }
        }
      } else if (clipping) {
        measured_[3 * i + 1] = double(be_->dot(g, g));
      }
    }
    if (deferred && clipping) defer_clip_factor(op, grads, n);
    exchange(measured_);
    std::size_t bad_count = 0;
    long long zeroed = 0;
    for (std::size_t i = 0; i < n; ++i)
      if (measured_[3 * i] != 0) {
        ++bad_count;
        zeroed += static_cast<long long>(measured_[3 * i + 2]);
      }
    if (bad_count > 0) {
      if (nonfinite == nonfinite_policy::raise) {
        std::string which;
        for (std::size_t i = 0; i < n; ++i)
          if (measured_[3 * i] != 0)
            which += (which.empty() ? "'" : ", '") + entries_[i].name + "' (" + entries_[i].w.shape_string() + ")";
        detail::raise<non_finite_error>(op, "the gradients of ", which,
                                        " hold NaN or infinity (policy raise; skip or zero would go on); nothing "
                                        "was stepped");
      }
      if (nonfinite == nonfinite_policy::skip) {
        ++skipped_;
        return;
      }
    }
    // Clipping factors: the same sums in the same order on every rank.
    factor_.assign(n, 1.0);
    if (deferred) {
      if (clipping) last_norm_ = std::numeric_limits<double>::quiet_NaN();  // it stayed on the device
    } else if (clipping || bad_count > 0) {
      double total = 0;
      for (std::size_t i = 0; i < n; ++i) total += measured_[3 * i + 1];
      last_norm_ = std::sqrt(total);
      if (clipping && !std::isfinite(last_norm_))
        detail::raise<numerical_error>(op, "the norm of the gradients overflows (", last_norm_,
                                       "); nothing was stepped");
      const double global = clip_norm > 0 ? std::min(1.0, clip_norm / (last_norm_ + 1e-6)) : 1.0;
      for (const auto& g : groups_) {
        double f = global;
        if (g->clip_norm > 0) {
          double sum = 0;
          for (index i : g->members()) sum += measured_[3 * std::size_t(i) + 1];
          f *= std::min(1.0, g->clip_norm / (global * std::sqrt(sum) + 1e-6));
        }
        for (index i : g->members()) factor_[std::size_t(i)] = f;
      }
    }
    // The steps: the gradients they get are finite (checked above, or
    // cleaned), so the policies skip their own pass over G.
    const detail::checked_gradients_scope checked;
    const std::size_t mark = detail::deferred_mark();  // the step counts move at the mark (count_step)
    after(no_slot);
    for (std::size_t i = 0; i < n; ++i) {
      const auto& e = entries_[i];
      if (!e.owned()) {
        after(i);
        continue;
      }
      auto& grp = *groups_[e.group];
      const bool bad = measured_[3 * i] != 0;
      if (deferred && clipping) {
        // The factor is on the device (defer_clip_factor).
        const auto g = grads[i].elements();
        const auto c = clip_view(g.rows(), g.cols());
        be_->map(detail::scale_by_fn<T>{clip_factors_[i]}, c, g);
        grp.step_member(*be_, e.slot, e.w, like(grads[i], c));
      } else if (bad || factor_[i] != 1.0) {
        const auto g = grads[i].elements();
        const auto c = clip_view(g.rows(), g.cols());
        be_->map(detail::clip_clean_fn<T>{T(factor_[i]), bad}, c, g);
        grp.step_member(*be_, e.slot, e.w, like(grads[i], c));
      } else {
        grp.step_member(*be_, e.slot, e.w, grads[i]);
      }
      after(i);
    }
    for (auto& g : groups_) detail::count_step(g->steps_, mark);
    if (bad_count > 0) {
      ++zeroed_steps_;
      zeroed_entries_ += zeroed;
    }
    detail::count_step(steps_, mark);
  }


  index add_to(std::string name, param_view<T> w, optimizer_group<Backend, T>* forced, bool owned = true) {
    constexpr const char* op = "polar::optimizer::add";
    for (const auto& e : entries_)
      if (e.name == name) detail::raise<value_error>(op, "a tensor named '", name, "' is already there");
    check_output(op, "W", w.elements());
    std::size_t gi = groups_.size();
    if (forced) {
      for (std::size_t k = 0; k < groups_.size(); ++k)
        if (groups_[k].get() == forced) gi = k;
    } else {
      const param_shape shape = shape_of(w);
      for (std::size_t k = 0; k < groups_.size() && gi == groups_.size(); ++k)
        if (groups_[k]->rule()(name, shape)) gi = k;
      if (gi == groups_.size()) {
        std::string rules;
        for (const auto& g : groups_) rules += (rules.empty() ? "" : "; ") + g->name() + ": " + g->rule().describe();
        detail::raise<value_error>(op, "no group's rule takes '", name, "' (", w.shape_string(), "); the groups are ",
                                   rules.empty() ? std::string("none (add_group first)") : rules);
      }
    }
    auto& g = *groups_[gi];
    std::size_t slot = no_slot;
    if (owned) {
      slot = g.add_state(*be_, name, w);
      g.share(pool_);
    }
    g.members_.push_back(index(entries_.size()));
    entries_.push_back(entry{std::move(name), w, gi, slot});
    return index(entries_.size()) - 1;
  }

  static param_shape shape_of(const param_view<T>& w) {
    param_shape s;
    if (w.is_tensor()) {
      s.rank = w.tensor().rank();
      for (int d = 0; d < s.rank; ++d) s.extent[d] = w.tensor().extent(d);
    } else {
      s.rank = 2;
      s.extent[0] = w.matrix().rows();
      s.extent[1] = w.matrix().cols();
    }
    s.matrix_like = s.rank >= 2 && w.matrix_like();
    return s;
  }

  optimizer_group<Backend, T>& group_named(const char* op, const std::string& name) const {
    for (const auto& g : groups_)
      if (g->name() == name) return *g;
    std::string known;
    for (const auto& g : groups_) known += (known.empty() ? "'" : ", '") + g->name() + "'";
    detail::raise<value_error>(op, "no group is named '", name, "'; the groups are ",
                               known.empty() ? std::string("none") : known);
  }
  template <class Policy>
  detail::group_of<Backend, T, Policy>& typed(const char* op, const std::string& name) {
    auto& g = group_named(op, name);
    auto* p = dynamic_cast<detail::group_of<Backend, T, Policy>*>(&g);
    if (!p)
      detail::raise<value_error>(op, "group '", name, "' has another policy (", g.policy_name(), ")");
    return *p;
  }

  // A deferred step's clipping, all on the backend: each gradient's norm
  // (its rows' norms, then their norm), the norm of those, the global
  // factor (1 without a global clip_norm), and for each group with a
  // clip_norm of its own its members' norm and its factor. clip_words_ =
  // [norm, global factor, the n norms, the groups' norms and factors,
  // scratch for a group's members' norms, scratch for the rows' norms];
  // clip_factors_[i] points at tensor i's factor. A total norm that is
  // not finite goes to a slot (numerical), as the eager step raises.
  void defer_clip_factor(const char* op, const param_view<const T>* grads, std::size_t n) {
    index most_rows = 1;
    for (std::size_t i = 0; i < n; ++i) most_rows = std::max(most_rows, grads[i].elements().rows());
    const index ngroups = index(groups_.size());
    const index need = 2 + 2 * index(n) + 2 * ngroups + most_rows;
    if (clip_words_.size() < need) clip_words_ = be_->template allocate<T>(need);
    const auto sp = Backend::space;
    T* const total = clip_words_.data();
    T* const global = total + 1;
    T* const norms = global + 1;
    T* const group_words = norms + n;  // norm, factor for each group
    T* const members = group_words + 2 * ngroups;
    T* const rows = members + n;
    const auto word = [](T* p) { return row_major_view(p, 1, 1, -1, Backend::space); };
    for (std::size_t i = 0; i < n; ++i) {
      const auto g = grads[i].elements();
      be_->row_norms(g, vector_view<T>(rows, g.rows(), 1, sp));
      be_->row_norms(as_const(row_major_view(rows, 1, g.rows(), -1, sp)), vector_view<T>(norms + i, 1, 1, sp));
    }
    be_->row_norms(as_const(row_major_view(norms, 1, index(n), -1, sp)), vector_view<T>(total, 1, 1, sp));
    // Without a global clip_norm the factor is 1 for a finite total and
    // NaN for one that is not, which the check below sees.
    const double clip = clip_norm > 0 ? clip_norm : std::numeric_limits<double>::infinity();
    be_->for_each_element(detail::clip_factor_fn<T>{clip, total}, word(global));
    detail::defer_check(*be_, *detail::deferred(), op, as_const(word(global)),
                        "the norm of the gradients is not finite, so they cannot be clipped; nothing was stepped",
                        detail::deferred_slot::numerical);
    clip_factors_.assign(n, global);
    for (index k = 0; k < ngroups; ++k) {
      const auto& grp = *groups_[std::size_t(k)];
      if (grp.clip_norm <= 0 || grp.members().empty()) continue;
      index count = 0;
      for (index i : grp.members()) be_->copy(as_const(word(norms + i)), word(members + count++));
      T* const gnorm = group_words + 2 * k;
      be_->row_norms(as_const(row_major_view(members, 1, count, -1, sp)), vector_view<T>(gnorm, 1, 1, sp));
      be_->for_each_element(detail::group_clip_factor_fn<T>{grp.clip_norm, global, gnorm}, word(gnorm + 1));
      for (index i : grp.members()) clip_factors_[std::size_t(i)] = gnorm + 1;
    }
  }

  // The clipping buffer as a rows x cols row-major matrix.

  matrix_view<T> clip_view(index rows, index cols) {
    if (clip_.size() < rows * cols) clip_ = be_->template allocate<T>(rows * cols);
    return row_major_view(clip_.data(), rows, cols, -1, Backend::space);
  }
  // The clipping buffer c shaped as the gradient g.
  static param_view<const T> like(const param_view<const T>& g, matrix_view<T> c) {
    if (g.is_tensor()) {
      return param_view<const T>(reshape(g.tensor(), c.data()));
    }
    return param_view<const T>(as_const(row_major_view(c.data(), g.matrix().rows(), g.matrix().cols(), -1,
                                                       Backend::space)));
  }
  static tensor_view<const T> reshape(const tensor_view<const T>& t, const T* data) {
    switch (t.rank()) {
      case 0: return tensor_view<const T>(data, {}, Backend::space);
      case 1: return tensor_view<const T>(data, {t.extent(0)}, Backend::space);
      case 2: return tensor_view<const T>(data, {t.extent(0), t.extent(1)}, Backend::space);
      case 3: return tensor_view<const T>(data, {t.extent(0), t.extent(1), t.extent(2)}, Backend::space);
      case 4: return tensor_view<const T>(data, {t.extent(0), t.extent(1), t.extent(2), t.extent(3)}, Backend::space);
      default:
        return tensor_view<const T>(data, {t.extent(0), t.extent(1), t.extent(2), t.extent(3), t.extent(4)},
                                    Backend::space);
    }
  }

  Backend* be_;
  std::vector<std::unique_ptr<optimizer_group<Backend, T>>> groups_;
  std::vector<entry> entries_;
  scratch_pool pool_;
  typename Backend::template buffer<T> clip_;
  std::vector<double> measured_;
  std::vector<double> factor_;
  long steps_ = 0;
  long skipped_ = 0;
  long zeroed_steps_ = 0;
  long long zeroed_entries_ = 0;
  double last_norm_ = 0;
  typename Backend::template buffer<T> clip_words_;  // a deferred step's clipping (defer_clip_factor)
  std::vector<const T*> clip_factors_;                // each tensor's factor in clip_words_
};

}  // namespace polar
