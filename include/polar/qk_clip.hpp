// polar/qk_clip.hpp: QK-clip, the attention-logit cap of MuonClip (Kimi
// K2: Open Agentic Intelligence, Kimi Team, arXiv 2507.20534, 2025).
//
// After an optimizer step, for each attention head h whose largest
// pre-softmax logit over the last batch was S_h, with
//
//   gamma_h = min(1, tau / S_h)          (tau = 100 by default)
//
// the head's query weights are multiplied by gamma_h^alpha and its key
// weights by gamma_h^(1 - alpha), alpha = 1/2 by default (the published
// split, sqrt(gamma_h) each). The head's logits q.k scale by gamma_h, so the
// next batch's largest logit is at most tau where the inputs did not move.
// Heads with S_h <= tau are not touched. The weights are the only thing
// changed: the optimizer's states are left as they are, as in Kimi K2.
//
// Layout: W_q is (heads * head_dim) x d_model, stored (out x in) as
// torch's nn.Linear stores it, so head h owns rows [h head_dim, (h+1)
// head_dim); head_axis::cols takes a matrix stored (in x out), whose heads
// are column blocks. W_k may have fewer heads than W_q (grouped-query
// attention, kv_heads = W_k's rows / head_dim, dividing heads): key head g
// serves query heads [g r, (g+1) r), r = heads / kv_heads, and is scaled by
// the smallest factor of those heads, so that no query head of the group
// keeps a logit above tau; each query head takes its own factor. (Kimi's
// MLA keys with rotary parts shared across heads are outside this form.)
//
// The caller measures S_h in its forward pass: the maximum over the batch,
// over every query and every key position the mask allows, of
// q_i . k_j / sqrt(head_dim) (whatever scale the softmax sees).
//
//   polar::qk_clip clip;                       // tau 100
//   ... forward (recording max_logit[h]), backward, opt.step(...) ...
//   clip.apply(be, wq, wk, heads, max_logit);  // returns the heads clipped
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

#include "polar/backend/concept.hpp"
#include "polar/core/check.hpp"
#include "polar/core/error.hpp"
#include "polar/core/view.hpp"

namespace polar {

/// Which axis of the weight matrices holds the heads.
enum class head_axis : unsigned char {
  rows,  ///< stored (out x in): head h is a block of rows (torch's nn.Linear)
  cols,  ///< stored (in x out): head h is a block of columns
};

/// QK-clip's settings and its application (see the header comment).
struct qk_clip {
  double tau = 100;                   ///< the cap on each head's largest logit, > 0
  double alpha = 0.5;                 ///< the query's share of the factor, in [0, 1]
  head_axis axis = head_axis::rows;   ///< where the heads lie in W_q and W_k

  /// gamma_h = min(1, tau / S_h) for one head's largest logit S_h.
  double factor(double max_logit) const noexcept { return max_logit > tau ? tau / max_logit : 1.0; }

  /// Rescales the query and key weights of every head whose largest logit
  /// exceeds tau; returns how many query heads were rescaled.
  /// @throws value_error for tau or alpha out of range, a head count that
  ///         does not divide W_q or whose head size does not divide W_k, a
  ///         key head count that does not divide heads, or a non-finite
  ///         logit (naming the head); shape_error when W_q and W_k differ
  ///         along the model axis. Nothing is written before the checks.
  template <class Backend, class T>
  index apply(Backend& be, matrix_view<T> wq, matrix_view<T> wk, index heads, const double* max_logits) const {
    constexpr const char* op = "polar::qk_clip::apply";
    check_output(op, "W_q", wq);
    check_output(op, "W_k", wk);
    if (!(tau > 0) || !std::isfinite(tau)) detail::raise<value_error>(op, "tau must be finite and > 0, got ", tau);
    if (!(alpha >= 0 && alpha <= 1)) detail::raise<value_error>(op, "alpha must be in [0, 1], got ", alpha);
    const bool by_rows = axis == head_axis::rows;
    const index q_size = by_rows ? wq.rows() : wq.cols(), k_size = by_rows ? wk.rows() : wk.cols();
    const index q_model = by_rows ? wq.cols() : wq.rows(), k_model = by_rows ? wk.cols() : wk.rows();
    if (q_model != k_model)
      detail::raise<shape_error>(op, "W_q is ", wq.rows(), "x", wq.cols(), " and W_k ", wk.rows(), "x", wk.cols(),
                                 ": their model dimensions (", by_rows ? "columns" : "rows", ") differ");
    if (heads < 1 || q_size % heads != 0)
      detail::raise<value_error>(op, "heads (", heads, ") must be >= 1 and divide W_q's ", by_rows ? "rows" : "columns",
                                 " (", q_size, ")");
    const index head_dim = q_size / heads;
    if (head_dim == 0 || k_size % head_dim != 0 || k_size == 0 || heads % (k_size / head_dim) != 0)
      detail::raise<value_error>(op, "W_k's ", by_rows ? "rows" : "columns", " (", k_size,
                                 ") must be a number of heads of size ", head_dim, " that divides heads (", heads, ")");
    if (!max_logits) detail::raise<value_error>(op, "max_logits is null");
    for (index h = 0; h < heads; ++h)
      if (!std::isfinite(max_logits[h]))
        detail::raise<value_error>(op, "the largest logit of head ", h, " is ", max_logits[h]);
    const index kv_heads = k_size / head_dim, group = heads / kv_heads;
    const auto block = [&](matrix_view<T> w, index h) {
      return by_rows ? w.block(h * head_dim, 0, head_dim, w.cols()) : w.block(0, h * head_dim, w.rows(), head_dim);
    };
    index clipped = 0;
    for (index h = 0; h < heads; ++h) {
      const double g = factor(max_logits[h]);
      if (g < 1) {
        be.scale(T(std::pow(g, alpha)), block(wq, h));
        ++clipped;
      }
    }
    for (index k = 0; k < kv_heads; ++k) {
      double g = 1;
      for (index h = k * group; h < (k + 1) * group; ++h) g = std::min(g, factor(max_logits[h]));
      if (g < 1 && alpha < 1) be.scale(T(std::pow(g, 1 - alpha)), block(wk, k));
    }
    return clipped;
  }
  /// The same with the logits in a vector of `heads` values.
  template <class Backend, class T>
  index apply(Backend& be, matrix_view<T> wq, matrix_view<T> wk, const std::vector<double>& max_logits) const {
    return apply(be, wq, wk, index(max_logits.size()), max_logits.data());
  }
};

}  // namespace polar
