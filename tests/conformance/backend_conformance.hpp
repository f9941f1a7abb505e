// tests/conformance/backend_conformance.hpp: the conformance battery of the
// backend operation set.
//
// Every backend runs the same battery: a test file defines
//   using conformance_types = boost::mpl::list<polar_test::config<B, float>, ...>;
// inside a namespace of its own and includes backend_conformance.ipp there
// (tests/backend/eigen.cpp shows how). Each case checks the backend against a
// double-precision reference on the host, over every layout of every operand:
// row-major, column-major, both padded, and a general strided layout with no
// unit stride. Buffers carry a sentinel around and between the elements of
// each view, and every case checks that nothing outside the view was written.
#pragma once

#include <boost/mpl/list.hpp>
#include <boost/test/unit_test.hpp>
#include <cstring>
#include <vector>

#include "polar/backend/concept.hpp"
#include "polar/core/check.hpp"
#include "polar/core/random.hpp"
#include "polar/orthogonalize/detail/stack_ops.hpp"
#include "support.hpp"

namespace polar_test {

/// One backend and scalar type under test.
template <class Backend, class T>
struct config {
  using backend = Backend;
  using scalar = T;
};

enum class layout_kind { row_major, col_major, row_padded, col_padded, strided };

inline const char* name(layout_kind l) {
  switch (l) {
    case layout_kind::row_major: return "row-major";
    case layout_kind::col_major: return "col-major";
    case layout_kind::row_padded: return "row-major padded";
    case layout_kind::col_padded: return "col-major padded";
    default: return "strided";
  }
}

inline const std::vector<layout_kind>& all_layouts() {
  static const std::vector<layout_kind> l = {layout_kind::row_major, layout_kind::col_major,
                                             layout_kind::row_padded, layout_kind::col_padded,
                                             layout_kind::strided};
  return l;
}

/// Strides of an r x c matrix in layout l.
inline std::pair<index, index> strides_of(index r, index c, layout_kind l) {
  switch (l) {
    case layout_kind::row_major: return {c, 1};
    case layout_kind::col_major: return {1, r};
    case layout_kind::row_padded: return {c + 3, 1};
    case layout_kind::col_padded: return {1, r + 2};
    default: return {2 * c + 1, 2};
  }
}

/// The sentinel that fills the memory around a view.
template <class T>
constexpr T sentinel() {
  return T(-12345.5);
}

/// A matrix in a backend's memory, in a chosen layout, with sentinels around
/// and between its elements.
template <class B, class T>
struct dmatrix {
  static constexpr index guard = 3;
  typename B::template buffer<T> buf;
  polar::matrix_view<T> view;
  index total = 0;
  index rows = 0, cols = 0;
  layout_kind layout = layout_kind::row_major;

  dmatrix(B& b, index r, index c, layout_kind l = layout_kind::row_major) : rows(r), cols(c), layout(l) {
    const auto [rs, cs] = strides_of(r, c, l);
    const index span = (r == 0 || c == 0) ? 0 : (r - 1) * rs + (c - 1) * cs + 1;
    total = span + 2 * guard;
    buf = b.template allocate<T>(total);
    std::vector<T> fill(std::size_t(total), sentinel<T>());
    b.copy_from_host(polar::matrix_view<const T>(fill.data(), 1, total, total, 1),
                     polar::matrix_view<T>(buf.data(), 1, total, total, 1, B::space));
    view = polar::matrix_view<T>(buf.data() + guard, r, c, rs, cs, B::space);
  }
  dmatrix(B& b, const host_matrix& h, layout_kind l = layout_kind::row_major)
      : dmatrix(b, h.rows, h.cols, l) {
    set(b, h);
  }

  polar::matrix_view<const T> cview() const { return view; }

  void set(B& b, const host_matrix& h) {
    std::vector<T> tmp(h.v.size());
    for (std::size_t i = 0; i < tmp.size(); ++i) tmp[i] = T(h.v[i]);
    b.copy_from_host(polar::matrix_view<const T>(tmp.data(), h.rows, h.cols, h.cols, 1), view);
  }
  std::vector<T> raw(B& b) const {
    std::vector<T> all(static_cast<std::size_t>(total));
    b.copy_to_host(polar::matrix_view<const T>(buf.data(), 1, total, total, 1, B::space),
                   polar::matrix_view<T>(all.data(), 1, total, total, 1));
    return all;
  }
  host_matrix get(B& b) const {
    std::vector<T> tmp(static_cast<std::size_t>(rows * cols));
    b.copy_to_host(cview(), polar::matrix_view<T>(tmp.data(), rows, cols, cols, 1));
    host_matrix h(rows, cols);
    for (std::size_t i = 0; i < tmp.size(); ++i) h.v[i] = double(tmp[i]);
    return h;
  }
  /// True when every element outside the view still holds the sentinel.
  bool untouched_outside(B& b) const {
    const auto all = raw(b);
    std::vector<char> inside(all.size(), 0);
    for (index i = 0; i < rows; ++i)
      for (index j = 0; j < cols; ++j)
        inside[std::size_t(guard + i * view.row_stride() + j * view.col_stride())] = 1;
    for (std::size_t k = 0; k < all.size(); ++k)
      if (!inside[k] && !(all[k] == sentinel<T>())) return false;
    return true;
  }
};

/// A vector in backend memory with stride 1 or 3.
template <class B, class T>
struct dvector {
  typename B::template buffer<T> buf;
  polar::vector_view<T> view;
  index n = 0, stride = 1;
  dvector(B& b, index size, index s = 1) : n(size), stride(s) {
    const index total = size == 0 ? 1 : (size - 1) * s + 1;
    buf = b.template allocate<T>(total);
    std::vector<T> fill(std::size_t(total), sentinel<T>());
    b.copy_from_host(polar::matrix_view<const T>(fill.data(), 1, total, total, 1),
                     polar::matrix_view<T>(buf.data(), 1, total, total, 1, B::space));
    view = polar::vector_view<T>(buf.data(), size, s, B::space);
  }
  void set(B& b, const std::vector<double>& h) {
    std::vector<T> tmp(h.size());
    for (std::size_t i = 0; i < h.size(); ++i) tmp[i] = T(h[i]);
    b.copy_from_host(polar::matrix_view<const T>(tmp.data(), 1, n, n, 1), view.as_row());
  }
  std::vector<double> get(B& b) const {
    std::vector<T> tmp(static_cast<std::size_t>(n));
    b.copy_to_host(polar::matrix_view<const T>(view.as_row()),
                   polar::matrix_view<T>(tmp.data(), 1, n, n, 1));
    return std::vector<double>(tmp.begin(), tmp.end());
  }
};

template <class T>
double max_abs_diff(const std::vector<double>& a, const std::vector<double>& b) {
  BOOST_REQUIRE_EQUAL(a.size(), b.size());
  double m = 0;
  for (std::size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

}  // namespace polar_test
