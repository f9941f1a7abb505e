// tests/conformance/backend_conformance.ipp: the battery's test cases.
// Included inside a namespace that defines `conformance_types`; see
// backend_conformance.hpp. No include guard on purpose.

using polar_test::dmatrix;
using polar_test::dvector;
using polar_test::host_matrix;
using polar_test::layout_kind;
using polar::index;

BOOST_AUTO_TEST_CASE_TEMPLATE(copy_and_fill_follow_every_layout, C, conformance_types) {
  using B = typename C::backend;
  using T = typename C::scalar;
  B b;
  const auto h = polar_test::random_matrix(7, 5, 1);
  for (auto ls : polar_test::all_layouts())
    for (auto ld : polar_test::all_layouts()) {
      BOOST_TEST_CONTEXT("src " << name(ls) << ", dst " << name(ld)) {
        dmatrix<B, T> src(b, h, ls), dst(b, 7, 5, ld);
        b.copy(src.cview(), dst.view);
        BOOST_TEST(polar_test::distance(dst.get(b), src.get(b)) == 0.0);
        BOOST_TEST(dst.untouched_outside(b));
        b.fill(dst.view, T(2.5));
        BOOST_TEST(polar_test::distance(dst.get(b), host_matrix(7, 5, 2.5)) == 0.0);
        BOOST_TEST(dst.untouched_outside(b));
      }
    }
}

BOOST_AUTO_TEST_CASE_TEMPLATE(gemm_matches_reference, C, conformance_types) {
  using B = typename C::backend;
  using T = typename C::scalar;
  B b;
  const index m = 9, k = 6, n = 7;
  for (polar::op oa : {polar::op::n, polar::op::t})
    for (polar::op ob : {polar::op::n, polar::op::t}) {
      const bool ta = oa == polar::op::t, tb = ob == polar::op::t;
      const auto ha = polar_test::random_matrix(ta ? k : m, ta ? m : k, 2);
      const auto hb = polar_test::random_matrix(tb ? n : k, tb ? k : n, 3);
      const auto hc = polar_test::random_matrix(m, n, 4);
      const auto ab = polar_test::product(ha, ta, hb, tb);
      for (auto la : polar_test::all_layouts())
        for (auto lb : polar_test::all_layouts())
          for (auto lc : polar_test::all_layouts())
            for (double beta : {0.0, -0.5}) {
              BOOST_TEST_CONTEXT("op " << ta << tb << " layouts " << name(la) << ", " << name(lb)
                                       << ", " << name(lc) << " beta " << beta) {
                dmatrix<B, T> a(b, ha, la), bb(b, hb, lb), c(b, hc, lc);
                if (beta == 0.0) b.fill(c.view, std::numeric_limits<T>::quiet_NaN());
                b.gemm(T(1.5), oa, a.cview(), ob, bb.cview(), T(beta), c.view);
                host_matrix ref(m, n);
                for (index i = 0; i < m; ++i)
                  for (index j = 0; j < n; ++j) ref(i, j) = 1.5 * ab(i, j) + beta * hc(i, j);
                BOOST_TEST(polar_test::distance(c.get(b), ref) <=
                           polar_test::tolerance<T>() * (1.5 * ab.norm() + hc.norm()));
                BOOST_TEST(c.untouched_outside(b));
              }
            }
    }
}

BOOST_AUTO_TEST_CASE_TEMPLATE(gemm_large_and_degenerate_shapes, C, conformance_types) {
  using B = typename C::backend;
  using T = typename C::scalar;
  B b;
  // Large enough for the backend's blocked and threaded paths.
  const auto ha = polar_test::random_matrix(150, 300, 5), hb = polar_test::random_matrix(300, 170, 6);
  dmatrix<B, T> a(b, ha, layout_kind::row_major), bb(b, hb, layout_kind::col_major);
  dmatrix<B, T> c(b, 150, 170, layout_kind::row_padded);
  b.gemm(T(1), polar::op::n, a.cview(), polar::op::n, bb.cview(), T(0), c.view);
  const auto ref = polar_test::product(ha, false, hb, false);
  BOOST_TEST(polar_test::distance(c.get(b), ref) <= polar_test::tolerance<T>() * 10 * ref.norm());
  // k = 0: C = beta C.
  dmatrix<B, T> a0(b, 4, 0), b0(b, 0, 3), c0(b, host_matrix(4, 3, 2.0));
  b.gemm(T(1), polar::op::n, a0.cview(), polar::op::n, b0.cview(), T(3), c0.view);
  BOOST_TEST(polar_test::distance(c0.get(b), host_matrix(4, 3, 6.0)) == 0.0);
  // Empty output: nothing to do, nothing thrown.
  dmatrix<B, T> ae(b, 0, 5), be(b, 5, 3), ce(b, 0, 3);
  BOOST_CHECK_NO_THROW(b.gemm(T(1), polar::op::n, ae.cview(), polar::op::n, be.cview(), T(0), ce.view));
}

BOOST_AUTO_TEST_CASE_TEMPLATE(syrk_computes_one_triangle_only, C, conformance_types) {
  using B = typename C::backend;
  using T = typename C::scalar;
  B b;
  for (index n : {5, 260})  // 260 crosses the Eigen backend's block size
    for (polar::op oa : {polar::op::n, polar::op::t})
      for (polar::uplo tri : {polar::uplo::lower, polar::uplo::upper})
        for (auto la : polar_test::all_layouts())
          for (auto lc : polar_test::all_layouts()) {
            if (n > 5 && (la != lc || la == layout_kind::col_padded)) continue;  // big: fewer combos
            const bool ta = oa == polar::op::t;
            const index k = 11;
            const auto ha = polar_test::random_matrix(ta ? k : n, ta ? n : k, 7);
            const auto hc = polar_test::random_matrix(n, n, 8);
            const auto aat = polar_test::product(ha, ta, ha, !ta);
            for (double beta : {0.0, 2.0}) {
              BOOST_TEST_CONTEXT("n " << n << " op " << ta << " lower " << (tri == polar::uplo::lower)
                                      << " layouts " << name(la) << ", " << name(lc) << " beta " << beta) {
                dmatrix<B, T> a(b, ha, la), c(b, hc, lc);
                b.syrk(tri, T(0.5), oa, a.cview(), T(beta), c.view);
                const auto got = c.get(b);
                double err = 0, untouched = 0;
                for (index i = 0; i < n; ++i)
                  for (index j = 0; j < n; ++j) {
                    const bool in = tri == polar::uplo::lower ? i >= j : i <= j;
                    if (in)
                      err = std::max(err, std::abs(got(i, j) - (0.5 * aat(i, j) + beta * hc(i, j))));
                    else
                      untouched = std::max(untouched, std::abs(got(i, j) - double(T(hc(i, j)))));
                  }
                BOOST_TEST(err <= polar_test::tolerance<T>() * 10 * (1 + beta));
                BOOST_TEST(untouched == 0.0);
                BOOST_TEST(c.untouched_outside(b));
                b.symmetrize(tri, c.view);
                const auto sym = c.get(b);
                // Symmetric, and copied from `tri` (which keeps its values),
                // not onto it.
                double asym = 0, moved = 0;
                for (index i = 0; i < n; ++i)
                  for (index j = 0; j < n; ++j) {
                    asym = std::max(asym, std::abs(sym(i, j) - sym(j, i)));
                    if (tri == polar::uplo::lower ? i >= j : i <= j)
                      moved = std::max(moved, std::abs(sym(i, j) - got(i, j)));
                  }
                BOOST_TEST(asym == 0.0);
                BOOST_TEST(moved == 0.0);
                BOOST_TEST(c.untouched_outside(b));
              }
            }
          }
}

// A long inner dimension: the Eigen backend reads op(A) in panels of
// columns (about 2 MB each, eigen_kernels::syrk_panel_columns) and adds
// their products in order; beta applies once, and the other triangle stays.
BOOST_AUTO_TEST_CASE_TEMPLATE(syrk_with_a_long_inner_dimension, C, conformance_types) {
  using B = typename C::backend;
  using T = typename C::scalar;
  B b;
  const index n = 40, k = 30000;  // at least two panels of floats or doubles for n = 40
  for (polar::op oa : {polar::op::n, polar::op::t})
    for (polar::uplo tri : {polar::uplo::lower, polar::uplo::upper}) {
      const bool ta = oa == polar::op::t;
      const auto ha = polar_test::random_matrix(ta ? k : n, ta ? n : k, 21);
      const auto hc = polar_test::random_matrix(n, n, 22);
      const auto aat = polar_test::product(ha, ta, ha, !ta);
      BOOST_TEST_CONTEXT("op " << ta << " lower " << (tri == polar::uplo::lower)) {
        dmatrix<B, T> a(b, ha, ta ? layout_kind::col_major : layout_kind::row_major),
            c(b, hc, layout_kind::row_major);
        b.syrk(tri, T(0.5), oa, a.cview(), T(2), c.view);
        const auto got = c.get(b);
        double err = 0, ref = 0, untouched = 0;
        for (index i = 0; i < n; ++i)
          for (index j = 0; j < n; ++j) {
            if (tri == polar::uplo::lower ? i >= j : i <= j) {
              const double want = 0.5 * aat(i, j) + 2 * hc(i, j);
              err += (got(i, j) - want) * (got(i, j) - want);
              ref += want * want;
            } else {
              untouched = std::max(untouched, std::abs(got(i, j) - double(T(hc(i, j)))));
            }
          }
        BOOST_TEST(std::sqrt(err) <= polar_test::tolerance<T>() * 10 * std::sqrt(ref));
        BOOST_TEST(untouched == 0.0);
        BOOST_TEST(c.untouched_outside(b));
      }
    }
}

BOOST_AUTO_TEST_CASE_TEMPLATE(batched_products_equal_one_by_one, C, conformance_types) {
  using B = typename C::backend;
  using T = typename C::scalar;
  B b;
  const index count = 6, m = 8, k = 5, n = 4;
  for (auto la : polar_test::all_layouts()) {
    BOOST_TEST_CONTEXT("layout " << name(la)) {
      // One tall matrix holds the stack: matrix q is rows q*m .. q*m+m-1.
      const auto ha = polar_test::random_matrix(count * m, k, 9);
      const auto hb = polar_test::random_matrix(count * k, n, 10);
      dmatrix<B, T> a(b, ha, la), bb(b, hb, la), c(b, count * m, n, la), s(b, count * m, m, la);
      auto stack = [](auto v, index rows) {
        return polar::batch_view<typename decltype(v)::element_type>(v.block(0, 0, rows, v.cols()),
                                                                     v.rows() / rows,
                                                                     rows * v.row_stride());
      };
      b.gemm_batched(T(1), polar::op::n, stack(a.cview(), m), polar::op::n, stack(bb.cview(), k),
                     T(0), stack(c.view, m));
      b.syrk_batched(polar::uplo::lower, T(1), polar::op::n, stack(a.cview(), m), T(0),
                     stack(s.view, m));
      const auto gc = c.get(b), gs = s.get(b);
      double err = 0, serr = 0;
      for (index q = 0; q < count; ++q) {
        host_matrix aq(m, k), bq(k, n);
        for (index i = 0; i < m; ++i)
          for (index j = 0; j < k; ++j) aq(i, j) = ha(q * m + i, j);
        for (index i = 0; i < k; ++i)
          for (index j = 0; j < n; ++j) bq(i, j) = hb(q * k + i, j);
        const auto cq = polar_test::product(aq, false, bq, false);
        const auto sq = polar_test::product(aq, false, aq, true);
        for (index i = 0; i < m; ++i) {
          for (index j = 0; j < n; ++j) err = std::max(err, std::abs(gc(q * m + i, j) - cq(i, j)));
          for (index j = 0; j <= i; ++j) serr = std::max(serr, std::abs(gs(q * m + i, j) - sq(i, j)));
        }
      }
      BOOST_TEST(err <= polar_test::tolerance<T>() * 10);
      BOOST_TEST(serr <= polar_test::tolerance<T>() * 10);
      // The upper triangles with a beta term; the lower ones untouched.
      const auto h0 = polar_test::random_matrix(count * m, m, 14);
      dmatrix<B, T> u(b, h0, la);
      b.syrk_batched(polar::uplo::upper, T(0.5), polar::op::n, stack(a.cview(), m), T(2), stack(u.view, m));
      const auto gu = u.get(b);
      double uerr = 0, moved = 0;
      for (index q = 0; q < count; ++q)
        for (index i = 0; i < m; ++i)
          for (index j = 0; j < m; ++j) {
            double aat = 0;
            for (index l = 0; l < k; ++l) aat += ha(q * m + i, l) * ha(q * m + j, l);
            const double in = double(T(h0(q * m + i, j)));
            if (j >= i)
              uerr = std::max(uerr, std::abs(gu(q * m + i, j) - (0.5 * aat + 2 * in)));
            else
              moved = std::max(moved, std::abs(gu(q * m + i, j) - in));
          }
      BOOST_TEST(uerr <= polar_test::tolerance<T>() * 30);
      BOOST_TEST(moved == 0.0);
      BOOST_TEST(u.untouched_outside(b));
    }
  }
}

// symmetrize_batched (through detail::symmetrize_stack, which takes it
// where the backend has it) on a stack held in one tall matrix of each
// layout: every matrix mirrored as symmetrize mirrors it alone, from
// either triangle, and nothing outside the stack written.
BOOST_AUTO_TEST_CASE_TEMPLATE(stacks_are_symmetrized_matrix_by_matrix, C, conformance_types) {
  using B = typename C::backend;
  using T = typename C::scalar;
  B b;
  const index count = 5, n = 7;
  const auto h = polar_test::random_matrix(count * n, n, 13);
  for (auto tri : {polar::uplo::lower, polar::uplo::upper})
    for (auto la : polar_test::all_layouts()) {
      BOOST_TEST_CONTEXT("layout " << name(la) << " lower " << (tri == polar::uplo::lower)) {
        dmatrix<B, T> c(b, h, la);
        const auto v = c.view;
        polar::detail::symmetrize_stack(
            b, tri, polar::batch_view<T>(v.block(0, 0, n, n), count, n * v.row_stride()));
        const auto got = c.get(b);
        double err = 0;
        for (index q = 0; q < count; ++q)
          for (index i = 0; i < n; ++i)
            for (index j = 0; j < n; ++j) {
              const bool keep = tri == polar::uplo::lower ? i >= j : i <= j;
              const double want = keep ? h(q * n + i, j) : h(q * n + j, i);
              err = std::max(err, std::abs(got(q * n + i, j) - double(T(want))));
            }
        BOOST_TEST(err == 0.0);
        BOOST_TEST(c.untouched_outside(b));
      }
    }
}

// At a size under the host backends' threading threshold and one past it
// (36019 elements; host::parallel_threshold is 32768), since the two run
// different code: one thread, or (thrust<omp>) the serial system.
BOOST_AUTO_TEST_CASE_TEMPLATE(level1_operations_match_reference, C, conformance_types) {
  using B = typename C::backend;
  using T = typename C::scalar;
  B b;
  for (const auto& [rows, cols] : {std::pair<index, index>{13, 9}, {181, 199}}) {
    const auto hx = polar_test::random_matrix(rows, cols, 11), hy = polar_test::random_matrix(rows, cols, 12);
    double dot = 0, sum = 0, sq = 0, mx = 0;
    for (std::size_t i = 0; i < hx.v.size(); ++i) {
      dot += hx.v[i] * hy.v[i];
      sum += hx.v[i];
      sq += hx.v[i] * hx.v[i];
      mx = std::max(mx, std::abs(hx.v[i]));
    }
    const double tol = polar_test::tolerance<T>() * 10;
    for (auto lx : polar_test::all_layouts())
      for (auto ly : polar_test::all_layouts()) {
        BOOST_TEST_CONTEXT(rows << "x" << cols << ", layouts " << name(lx) << ", " << name(ly)) {
          dmatrix<B, T> x(b, hx, lx), y(b, hy, ly);
          BOOST_TEST(std::abs(double(b.dot(x.cview(), y.cview())) - dot) <= tol * 10);
          BOOST_TEST(std::abs(double(b.dot(x.view, y.view)) - dot) <= tol * 10);  // non-const views too
          BOOST_TEST(std::abs(double(b.sum(x.cview())) - sum) <= tol * 10);
          BOOST_TEST(std::abs(double(b.norm(x.cview())) - std::sqrt(sq)) <= tol * std::sqrt(sq));
          BOOST_TEST(double(b.max_abs(x.cview())) == double(T(mx)));
          BOOST_TEST(b.all_finite(x.cview()));
          b.axpby(T(2), x.cview(), T(-3), y.view);
          host_matrix ref(rows, cols);
          for (std::size_t i = 0; i < ref.v.size(); ++i) ref.v[i] = 2 * hx.v[i] - 3 * hy.v[i];
          BOOST_TEST(polar_test::distance(y.get(b), ref) <= tol * ref.norm());
          // beta = 0 does not read y: NaN there does not propagate.
          b.fill(y.view, std::numeric_limits<T>::quiet_NaN());
          b.axpby(T(2), x.cview(), T(0), y.view);
          for (std::size_t i = 0; i < ref.v.size(); ++i) ref.v[i] = 2 * hx.v[i];
          BOOST_TEST(polar_test::distance(y.get(b), ref) <= tol * ref.norm());
          b.scale(T(0.5), y.view);
          BOOST_TEST(polar_test::distance(y.get(b), hx) <= tol * hx.norm());
          BOOST_TEST(x.untouched_outside(b));
          BOOST_TEST(y.untouched_outside(b));
        }
      }
  }
}

// all_finite tests bits (detail::contiguous_finite) in chunks of 8192
// elements: every kind of non-finite value is seen wherever it lies, in
// every layout, and the finite extremes are not mistaken for one.
BOOST_AUTO_TEST_CASE_TEMPLATE(all_finite_sees_every_nonfinite_value, C, conformance_types) {
  using B = typename C::backend;
  using T = typename C::scalar;
  using lim = std::numeric_limits<T>;
  B b;
  // 17557 elements: two full chunks and a ragged third; 35114: four and a
  // ragged fifth, past the host backends' threading threshold (32768).
  for (const index rows : {97, 194}) {
    const index cols = 181;
    host_matrix h = polar_test::random_matrix(rows, cols, 31);
    h(0, 1) = double(lim::max());
    h(1, 0) = -double(lim::max());
    h(2, 2) = double(lim::denorm_min());
    h(3, 3) = -0.0;
    h(4, 4) = double(lim::lowest());
    const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
    const std::pair<index, index> places[] = {{0, 0}, {rows - 1, cols - 1}, {45, 47}, {45, 48}, {90, 93}, {96, 0}};
    for (auto l : polar_test::all_layouts()) {
      BOOST_TEST_CONTEXT(rows << "x" << cols << ", layout " << name(l)) {
        dmatrix<B, T> x(b, h, l);
        BOOST_TEST(b.all_finite(x.cview()));
        for (const double bad : {nan, -nan, inf, -inf})
          for (const auto& [i, j] : places) {
            BOOST_TEST_CONTEXT(bad << " at (" << i << ", " << j << ")") {
              host_matrix hb = h;
              hb(i, j) = bad;
              x.set(b, hb);
              BOOST_TEST(!b.all_finite(x.cview()));
              BOOST_TEST(x.untouched_outside(b));
            }
          }
        // NaN in the memory around and between the elements is not read.
        x.set(b, h);
        std::vector<T> all = x.raw(b);
        std::vector<char> inside(all.size(), 0);
        for (index i = 0; i < rows; ++i)
          for (index j = 0; j < cols; ++j)
            inside[std::size_t(x.guard + i * x.view.row_stride() + j * x.view.col_stride())] = 1;
        for (std::size_t k = 0; k < all.size(); ++k)
          if (!inside[k]) all[k] = lim::quiet_NaN();
        const auto n = index(all.size());
        b.copy_from_host(polar::matrix_view<const T>(all.data(), 1, n, n, 1),
                         polar::matrix_view<T>(x.buf.data(), 1, n, n, 1, B::space));
        BOOST_TEST(b.all_finite(x.cview()));
      }
    }
  }
}

// count_nonfinite adds the number of NaN and infinite entries to a word of
// backend memory and sets another when there are any; a finite matrix
// leaves both words as they were. Every layout, across the host backends'
// threading threshold and the GPU's grid stride.
BOOST_AUTO_TEST_CASE_TEMPLATE(count_nonfinite_counts_into_backend_memory, C, conformance_types) {
  using B = typename C::backend;
  using T = typename C::scalar;
  using word = polar::check_word;
  B b;
  auto words = b.template allocate<word>(2);
  const auto wv = polar::matrix_view<word>(words.data(), 1, 2, 2, 1, B::space);
  const auto read = [&] {
    word h[2] = {0, 0};
    b.copy_to_host(polar::matrix_view<const word>(wv), polar::matrix_view<word>(h, 1, 2, 2, 1));
    return std::pair<word, word>{h[0], h[1]};
  };
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  for (const index rows : {1, 97, 400}) {
    const index cols = 181;
    host_matrix h = polar_test::random_matrix(rows, cols, 41);
    h(0, 0) = double(std::numeric_limits<T>::max());
    for (auto l : polar_test::all_layouts()) {
      BOOST_TEST_CONTEXT(rows << "x" << cols << ", layout " << name(l)) {
        dmatrix<B, T> x(b, h, l);
        b.fill(wv, word(5));
        b.count_nonfinite(x.cview(), words.data(), words.data() + 1);
        BOOST_TEST((read() == std::pair<word, word>{5, 5}));  // finite: nothing written
        host_matrix hb = h;
        hb(rows - 1, cols - 1) = nan;
        hb(0, 1) = -inf;
        if (rows > 1) hb(rows / 2, 7) = inf;
        const word bad = rows > 1 ? 3 : 2;
        x.set(b, hb);
        b.fill(wv, word(0));
        b.count_nonfinite(x.cview(), words.data(), words.data() + 1);
        BOOST_TEST((read() == std::pair<word, word>{bad, 1}));
        b.count_nonfinite(x.cview(), words.data(), words.data() + 1);  // adds
        BOOST_TEST((read() == std::pair<word, word>{2 * bad, 1}));
        BOOST_TEST(x.untouched_outside(b));
      }
    }
  }
  b.fill(wv, word(0));
  dmatrix<B, T> empty(b, 0, 4);
  b.count_nonfinite(empty.cview(), words.data(), words.data() + 1);
  BOOST_TEST((read() == std::pair<word, word>{0, 0}));
}

BOOST_AUTO_TEST_CASE_TEMPLATE(row_and_column_reductions_and_scalings, C, conformance_types) {
  using B = typename C::backend;
  using T = typename C::scalar;
  B b;
  // 700 crosses the column sweep's row block; 4000 x 9 the host backends'
  // threading threshold (32768 elements).
  for (index rows : {6, 700, 4000}) {
    const index cols = 9;
    const auto h = polar_test::random_matrix(rows, cols, 13);
    std::vector<double> rn(std::size_t(rows), 0), rs(std::size_t(rows), 0), cn(std::size_t(cols), 0),
        cs(std::size_t(cols), 0);
    for (index i = 0; i < rows; ++i)
      for (index j = 0; j < cols; ++j) {
        rn[std::size_t(i)] += h(i, j) * h(i, j);
        cn[std::size_t(j)] += h(i, j) * h(i, j);
        rs[std::size_t(i)] += h(i, j);
        cs[std::size_t(j)] += h(i, j);
      }
    for (auto& v : rn) v = std::sqrt(v);
    for (auto& v : cn) v = std::sqrt(v);
    const double tol = polar_test::tolerance<T>() * 10;
    for (auto l : polar_test::all_layouts())
      for (index stride : {1, 3}) {
        BOOST_TEST_CONTEXT("rows " << rows << " layout " << name(l) << " out stride " << stride) {
          dmatrix<B, T> x(b, h, l);
          dvector<B, T> vr(b, rows, stride), vc(b, cols, stride);
          b.row_norms(x.cview(), vr.view);
          BOOST_TEST(polar_test::max_abs_diff<T>(vr.get(b), rn) <= tol * 10);
          b.row_sums(x.cview(), vr.view);
          BOOST_TEST(polar_test::max_abs_diff<T>(vr.get(b), rs) <= tol * 10);
          b.col_norms(x.cview(), vc.view);
          BOOST_TEST(polar_test::max_abs_diff<T>(vc.get(b), cn) <= tol * 100);
          b.col_sums(x.cview(), vc.view);
          BOOST_TEST(polar_test::max_abs_diff<T>(vc.get(b), cs) <= tol * 100);
          // Scale rows by 1 / norm, then columns by 2: rows come out with norm 2... per column scale.
          std::vector<double> inv(rn.size());
          for (std::size_t i = 0; i < rn.size(); ++i) inv[i] = 1 / rn[i];
          vr.set(b, inv);
          b.scale_rows(polar::vector_view<const T>(vr.view), x.view);
          std::vector<double> two(std::size_t(cols), 2.0);
          vc.set(b, two);
          b.scale_cols(polar::vector_view<const T>(vc.view), x.view);
          b.row_norms(x.cview(), vr.view);
          for (double v : vr.get(b)) BOOST_TEST(std::abs(v - 2.0) <= tol * 10);
          BOOST_TEST(x.untouched_outside(b));
        }
      }
  }
}

namespace conformance_functors {
struct square {
  template <class T>
  POLAR_HOST_DEVICE T operator()(T a) const { return a * a; }
};
struct fma3 {
  template <class T>
  POLAR_HOST_DEVICE T operator()(T a, T b, T c) const { return a * b + c; }
};
struct diff {
  template <class T>
  POLAR_HOST_DEVICE T operator()(T a, T b) const { return a - b; }
};
}  // namespace conformance_functors

BOOST_AUTO_TEST_CASE_TEMPLATE(map_applies_functors_of_one_to_three_inputs, C, conformance_types) {
  using B = typename C::backend;
  using T = typename C::scalar;
  B b;
  const auto ha = polar_test::random_matrix(10, 7, 14), hb = polar_test::random_matrix(10, 7, 15),
             hc = polar_test::random_matrix(10, 7, 16);
  const double tol = polar_test::tolerance<T>() * 10;
  for (auto lo : polar_test::all_layouts())
    for (auto li : polar_test::all_layouts()) {
      BOOST_TEST_CONTEXT("out " << name(lo) << ", inputs " << name(li)) {
        dmatrix<B, T> a(b, ha, li), bb(b, hb, li), c(b, hc, lo), out(b, 10, 7, lo);
        b.map(conformance_functors::square{}, out.view, a.cview());
        b.map(conformance_functors::diff{}, out.view, out.cview(), a.view);  // in place
        host_matrix ref(10, 7);
        for (std::size_t i = 0; i < ref.v.size(); ++i) ref.v[i] = ha.v[i] * ha.v[i] - ha.v[i];
        BOOST_TEST(polar_test::distance(out.get(b), ref) <= tol * ref.norm());
        b.map(conformance_functors::fma3{}, c.view, a.cview(), bb.cview(), c.cview());
        for (std::size_t i = 0; i < ref.v.size(); ++i) ref.v[i] = ha.v[i] * hb.v[i] + hc.v[i];
        BOOST_TEST(polar_test::distance(c.get(b), ref) <= tol * ref.norm());
        BOOST_TEST(out.untouched_outside(b));
        BOOST_TEST(c.untouched_outside(b));
      }
    }
}

namespace conformance_functors {
// Per row: xy = <x, y>, (|x|^2, |y|^2) in one sum, x <- x - xy / |y|^2 y,
// then <x, y> again (0 to rounding: the later sum sees the loop's writes),
// both written to per-row outputs; flags: code 1 where xy < 0, code 2 on
// rows 2, 5, 8, ...
template <class T>
struct project_rows {
  T* out;  // rows x 2, row-major
  POLAR_HD_TEMPLATE
  template <class Row, class X, class Y>
  POLAR_HOST_DEVICE void operator()(const Row& row, X x, Y y) const {
    const double xy = row.sum([=](polar::index j) { return x[j] * y[j]; });
    const auto sq = row.sum([=](polar::index j) { return polar::sums<T, 2>{{x[j] * x[j], y[j] * y[j]}}; });
    const T c = T(xy / sq[1]);
    row.for_each([=](polar::index j) { x[j] = x[j] - c * y[j]; });
    const double after = row.sum([=](polar::index j) { return x[j] * y[j]; });
    T* const o = out + 2 * row.row();
    const double n0 = sq[0];
    row.single([=] {
      o[0] = T(n0);
      o[1] = T(after);
    });
    if (xy < 0) row.flag(1);
    if (row.row() % 3 == 2) row.flag(2);
  }
};
// A sum whose functor writes: z <- 2 x, summed; then the sum of z read back.
template <class T>
struct write_in_sum {
  T* out;  // rows x 2
  POLAR_HD_TEMPLATE
  template <class Row, class X, class Z>
  POLAR_HOST_DEVICE void operator()(const Row& row, X x, Z z) const {
    const double a = row.sum([=](polar::index j) {
      z[j] = T(2) * x[j];
      return z[j];
    });
    const double b = row.sum([=](polar::index j) { return double(z[j]); });
    T* const o = out + 2 * row.row();
    row.single([=] {
      o[0] = T(a);
      o[1] = T(b);
    });
  }
};
// Column sums: sum 0 of column j adds x y over the rows (in the row's sum,
// which also goes to a per-row output), then x <- 2 x and sum 1 adds the
// new x (in a loop).
template <class T>
struct column_totals {
  T* out;  // rows
  POLAR_HD_TEMPLATE
  template <class Row, class X, class Y>
  POLAR_HOST_DEVICE void operator()(const Row& row, X x, Y y) const {
    const double xy = row.sum([=](polar::index j) {
      const T p = x[j] * y[j];
      row.column(0, j) += p;
      return p;
    });
    row.for_each([=](polar::index j) {
      x[j] = T(2) * x[j];
      row.column(1, j) += x[j];
    });
    T* const o = out + row.row();
    row.single([=] { *o = T(xy); });
  }
};
}  // namespace conformance_functors

namespace conformance_functors {
// Two outputs from three operands in one pass: a <- a c + b, b <- b - c.
struct two_outputs {
  template <class T>
  POLAR_HOST_DEVICE void operator()(T& a, T& b, const T& c) const {
    const T a0 = a;
    a = a0 * c + b;
    b = b - c;
  }
};
}  // namespace conformance_functors

BOOST_AUTO_TEST_CASE_TEMPLATE(for_each_element_writes_several_outputs_in_any_layout, C, conformance_types) {
  using B = typename C::backend;
  using T = typename C::scalar;
  B b;
  const double tol = polar_test::tolerance<T>() * 10;
  for (const auto& [rows, cols] : {std::pair<index, index>{10, 7}, {1, 300}, {300, 1}})
    for (auto la : polar_test::all_layouts())
      for (auto lc : polar_test::all_layouts()) {
        BOOST_TEST_CONTEXT(rows << "x" << cols << ", a and b " << name(la) << ", c " << name(lc)) {
          dmatrix<B, T> a(b, polar_test::random_matrix(rows, cols, 31), la),
              bb(b, polar_test::random_matrix(rows, cols, 32), la), c(b, polar_test::random_matrix(rows, cols, 33), lc);
          const host_matrix ha = a.get(b), hb = bb.get(b), hc = c.get(b);
          b.for_each_element(conformance_functors::two_outputs{}, a.view, bb.view, c.cview());
          host_matrix ra(rows, cols), rb(rows, cols);
          for (std::size_t k = 0; k < ra.v.size(); ++k) {
            ra.v[k] = ha.v[k] * hc.v[k] + hb.v[k];
            rb.v[k] = hb.v[k] - hc.v[k];
          }
          BOOST_TEST(polar_test::distance(a.get(b), ra) <= tol * ra.norm());
          BOOST_TEST(polar_test::distance(bb.get(b), rb) <= tol * rb.norm());
          BOOST_TEST(a.untouched_outside(b));
          BOOST_TEST(bb.untouched_outside(b));
          BOOST_TEST(c.untouched_outside(b));
        }
      }
  dmatrix<B, T> x(b, 4, 6), y(b, 4, 5);
  polar_test::check_throws<polar::shape_error>(
      [&] { b.for_each_element(conformance_functors::two_outputs{}, x.view, x.view, y.cview()); },
      {"polar::for_each_element", "4x6", "4x5"});
  const polar::matrix_view<T> shifted(x.view.data() + 1, 4, 6, 6, 1, B::space);
  polar_test::check_throws<polar::value_error>(
      [&] { b.for_each_element(conformance_functors::two_outputs{}, x.view, shifted, x.cview()); },
      {"polar::for_each_element", "shares memory"});
}

BOOST_AUTO_TEST_CASE_TEMPLATE(for_each_row_reduces_and_writes_each_row_in_any_layout, C, conformance_types) {
  using B = typename C::backend;
  using T = typename C::scalar;
  B b;
  const double tol = polar_test::tolerance<T>() * 10;
  // 3000 columns: several host sum blocks, and more columns than GPU threads.
  for (const auto& [rows, cols] : {std::pair<index, index>{10, 7}, {5, 3000}, {1, 1}})
    for (auto lx : polar_test::all_layouts())
      for (auto ly : polar_test::all_layouts()) {
        BOOST_TEST_CONTEXT(rows << "x" << cols << ", x " << name(lx) << ", y " << name(ly)) {
          dmatrix<B, T> x(b, polar_test::random_matrix(rows, cols, 21), lx),
              y(b, polar_test::random_matrix(rows, cols, 22), ly), out(b, rows, 2);
          const host_matrix hx = x.get(b), hy = y.get(b);  // the values in T
          const polar::row_flags f =
              b.for_each_row(conformance_functors::project_rows<T>{out.view.data()}, x.view, y.cview());
          const host_matrix got = x.get(b), o = out.get(b);
          host_matrix ref(rows, cols);
          for (index i = 0; i < rows; ++i) {
            double xy = 0, xx = 0, yy = 0;
            for (index j = 0; j < cols; ++j) {
              xy += hx(i, j) * hy(i, j);
              xx += hx(i, j) * hx(i, j);
              yy += hy(i, j) * hy(i, j);
            }
            for (index j = 0; j < cols; ++j) ref(i, j) = hx(i, j) - xy / yy * hy(i, j);
            BOOST_TEST(std::abs(o(i, 0) - xx) <= tol * xx);
            BOOST_TEST(std::abs(o(i, 1)) <= tol * std::sqrt(xx * yy) * 10);
            if (xy < 0) BOOST_TEST(f.first[1] <= i);
          }
          BOOST_TEST(polar_test::distance(got, ref) <= tol * 10 * hx.norm());
          BOOST_TEST(f.rows == rows);
          BOOST_TEST(f.first[0] == rows);  // never flagged
          BOOST_TEST(f.first[2] == (rows > 2 ? 2 : rows));
          index first_negative = rows;
          for (index i = rows - 1; i >= 0; --i) {
            double xy = 0;
            for (index j = 0; j < cols; ++j) xy += hx(i, j) * hy(i, j);
            if (xy < 0) first_negative = i;
          }
          BOOST_TEST(f.first[1] == first_negative);
          BOOST_TEST(f.any(1) == (first_negative < rows));
          BOOST_TEST(x.untouched_outside(b));
          BOOST_TEST(y.untouched_outside(b));
        }
      }
}

BOOST_AUTO_TEST_CASE_TEMPLATE(for_each_row_sums_see_what_earlier_passes_wrote, C, conformance_types) {
  using B = typename C::backend;
  using T = typename C::scalar;
  B b;
  const double tol = polar_test::tolerance<T>() * 10;
  // 70000 rows: more rows than the GPU launches blocks for.
  for (const auto& [rows, cols] : {std::pair<index, index>{70000, 2}, {3, 1100}}) {
    BOOST_TEST_CONTEXT(rows << "x" << cols) {
      dmatrix<B, T> x(b, polar_test::random_matrix(rows, cols, 23), layout_kind::col_major), z(b, rows, cols),
          out(b, rows, 2);
      const host_matrix hx = x.get(b);
      b.for_each_row(conformance_functors::write_in_sum<T>{out.view.data()}, x.cview(), z.view);
      const host_matrix o = out.get(b), hz = z.get(b);
      double worst = 0;
      for (index i = 0; i < rows; ++i) {
        double s = 0, a = 0;
        for (index j = 0; j < cols; ++j) {
          s += 2 * hx(i, j);
          a += std::abs(hx(i, j));
          worst = std::max(worst, std::abs(hz(i, j) - 2 * hx(i, j)));
        }
        BOOST_TEST(std::abs(o(i, 0) - s) <= tol * 2 * a);
        BOOST_TEST(std::abs(o(i, 1) - s) <= tol * 2 * a);
      }
      BOOST_TEST(worst == 0);
    }
  }
}

BOOST_AUTO_TEST_CASE_TEMPLATE(for_each_row_sums_columns_the_same_way_every_time, C, conformance_types) {
  using B = typename C::backend;
  using T = typename C::scalar;
  B b;
  const double tol = polar_test::tolerance<T>() * 10;
  // 70000 rows: more than the host's parts and the GPU's column blocks;
  // 3000 columns: more than a block's threads.
  for (const auto& [rows, cols] : {std::pair<index, index>{70000, 3}, {300, 3000}, {1, 5}, {0, 4}})
    for (auto lx : polar_test::all_layouts()) {
      BOOST_TEST_CONTEXT(rows << "x" << cols << ", x " << name(lx)) {
        const host_matrix x0 = polar_test::random_matrix(rows, cols, 25), y0 = polar_test::random_matrix(rows, cols, 26);
        dmatrix<B, T> x(b, x0, lx), y(b, y0, layout_kind::col_major), out(b, std::max<index>(rows, 1), 1),
            sums(b, 2, cols);
        const host_matrix hx = x.get(b), hy = y.get(b);
        const conformance_functors::column_totals<T> k{out.view.data()};
        b.for_each_row(k, polar::column_sums<T>{sums.view}, x.view, y.cview());
        const host_matrix got = sums.get(b), nx = x.get(b), o = out.get(b);
        for (index j = 0; j < cols; ++j) {
          double s0 = 0, s1 = 0, a0 = 0;
          for (index i = 0; i < rows; ++i) {
            s0 += hx(i, j) * hy(i, j);
            a0 += std::abs(hx(i, j) * hy(i, j));
            s1 += 2 * hx(i, j);
          }
          double a1 = 0;
          for (index i = 0; i < rows; ++i) a1 += std::abs(2 * hx(i, j));
          BOOST_TEST(std::abs(got(0, j) - s0) <= tol * (a0 + 1e-30));
          BOOST_TEST(std::abs(got(1, j) - s1) <= tol * (a1 + 1e-30));
        }
        for (index i = 0; i < rows; ++i) {
          double xy = 0, a = 0;
          for (index j = 0; j < cols; ++j) {
            xy += hx(i, j) * hy(i, j);
            a += std::abs(hx(i, j) * hy(i, j));
          }
          BOOST_TEST(std::abs(o(i, 0) - xy) <= tol * (a + 1e-30));
        }
        host_matrix twice = hx;
        for (double& e : twice.v) e *= 2;
        BOOST_TEST(polar_test::distance(nx, twice) == 0);
        BOOST_TEST(x.untouched_outside(b));
        // The same call again gives the same bits.
        dmatrix<B, T> x2(b, x0, lx), sums2(b, 2, cols);
        b.for_each_row(k, polar::column_sums<T>{sums2.view}, x2.view, y.cview());
        BOOST_TEST(polar_test::distance(sums2.get(b), got) == 0);
      }
    }
}

BOOST_AUTO_TEST_CASE_TEMPLATE(for_each_row_checks_its_column_sums_first, C, conformance_types) {
  using B = typename C::backend;
  using T = typename C::scalar;
  B b;
  dmatrix<B, T> x(b, polar_test::random_matrix(4, 6, 27)), y(b, polar_test::random_matrix(4, 6, 28)), out(b, 4, 1),
      wide(b, 2, 7), many(b, 5, 6);
  const host_matrix hx = x.get(b);
  const conformance_functors::column_totals<T> k{out.view.data()};
  polar_test::check_throws<polar::shape_error>(
      [&] { b.for_each_row(k, polar::column_sums<T>{wide.view}, x.view, y.cview()); },
      {"polar::for_each_row", "2x7", "4x6"});
  polar_test::check_throws<polar::shape_error>(
      [&] { b.for_each_row(k, polar::column_sums<T>{many.view}, x.view, y.cview()); },
      {"polar::for_each_row", "5x6", "from 1 to 4"});
  const polar::matrix_view<T> inside(x.view.data() + 12, 2, 6, 6, 1, B::space);
  polar_test::check_throws<polar::value_error>(
      [&] { b.for_each_row(k, polar::column_sums<T>{inside}, x.view, y.cview()); },
      {"polar::for_each_row", "column sums", "operand 0", "shares memory"});
  BOOST_TEST(polar_test::distance(x.get(b), hx) == 0);  // nothing was written
}

BOOST_AUTO_TEST_CASE_TEMPLATE(for_each_row_checks_its_operands_first, C, conformance_types) {
  using B = typename C::backend;
  using T = typename C::scalar;
  B b;
  dmatrix<B, T> x(b, polar_test::random_matrix(4, 6, 24)), y(b, 4, 5), out(b, 4, 2);
  const host_matrix hx = x.get(b);
  const conformance_functors::project_rows<T> k{out.view.data()};
  polar_test::check_throws<polar::shape_error>([&] { b.for_each_row(k, x.view, y.cview()); },
                                               {"polar::for_each_row", "4x6", "4x5"});
  // A written operand that overlaps another without being the same view.
  const polar::matrix_view<T> shifted(x.view.data() + 1, 4, 6, 6, 1, B::space);
  polar_test::check_throws<polar::value_error>([&] { b.for_each_row(k, x.view, as_const(shifted)); },
                                               {"polar::for_each_row", "operand 0", "shares memory"});
  std::vector<T> host(24);
  const polar::matrix_view<const T> wrong(host.data(), 4, 6, 6, 1,
                                          B::space == polar::memory_space::host ? polar::memory_space::device
                                                                                : polar::memory_space::host);
  polar_test::check_throws<polar::memory_space_error>([&] { b.for_each_row(k, x.view, wrong); },
                                                      {"polar::for_each_row", "operand 1"});
  BOOST_TEST(polar_test::distance(x.get(b), hx) == 0);  // nothing was written
  // The same view twice is one operand read and written in place.
  b.for_each_row(k, x.view, x.cview());
  dmatrix<B, T> empty(b, 0, 3);
  const polar::row_flags f = b.for_each_row(k, empty.view, empty.cview());
  BOOST_TEST(f.rows == 0);
  BOOST_TEST(!f.any(0));
}

BOOST_AUTO_TEST_CASE_TEMPLATE(fill_random_is_the_keyed_stream_in_any_layout, C, conformance_types) {
  using B = typename C::backend;
  using T = typename C::scalar;
  B b;
  const polar::rng_key key{0x0123456789abcdefull, 3, 17, 2};
  const polar::philox_stream st(key);
  for (auto d : {polar::distribution::normal, polar::distribution::rademacher,
                 polar::distribution::uniform})
    for (std::uint64_t offset : {0ull, 5ull, 1000003ull})
      for (auto l : polar_test::all_layouts()) {
        BOOST_TEST_CONTEXT(polar::to_string(d) << " offset " << offset << " layout " << name(l)) {
          const index r = 37, c = 29;  // not multiples of any block size
          dmatrix<B, T> x(b, r, c, l);
          b.fill_random(x.view, key, d, T(1), offset);
          std::vector<T> got(std::size_t(r * c));
          b.copy_to_host(x.cview(), polar::matrix_view<T>(got.data(), r, c, c, 1));
          std::size_t mismatches = 0;
          for (index i = 0; i < r * c; ++i) {
            const T want = st.template operator()<T>(d, offset + std::uint64_t(i));
            if (std::memcmp(&want, &got[std::size_t(i)], sizeof(T)) != 0) ++mismatches;
          }
          BOOST_TEST(mismatches == 0u);
          BOOST_TEST(x.untouched_outside(b));
          // A scale multiplies each value once.
          b.fill_random(x.view, key, d, T(0.25), offset);
          b.copy_to_host(x.cview(), polar::matrix_view<T>(got.data(), r, c, c, 1));
          mismatches = 0;
          for (index i = 0; i < r * c; ++i) {
            const T want = T(T(0.25) * st.template operator()<T>(d, offset + std::uint64_t(i)));
            if (std::memcmp(&want, &got[std::size_t(i)], sizeof(T)) != 0) ++mismatches;
          }
          BOOST_TEST(mismatches == 0u);
        }
      }
  // A large fill goes through the threaded chunked path; it must agree too.
  dmatrix<B, T> big(b, 300, 301, layout_kind::row_major);
  b.fill_random(big.view, key, polar::distribution::normal, T(1), 77);
  const auto raw = big.raw(b);
  std::size_t bad = 0;
  for (index i = 0; i < 300 * 301; ++i)
    if (!(raw[std::size_t(dmatrix<B, T>::guard + i)] == st.template normal<T>(77 + std::uint64_t(i)))) ++bad;
  BOOST_TEST(bad == 0u);
}

BOOST_AUTO_TEST_CASE_TEMPLATE(qr_gives_orthonormal_q_and_positive_diagonal, C, conformance_types) {
  using B = typename C::backend;
  using T = typename C::scalar;
  B b;
  for (auto shape : {std::pair<index, index>{12, 5}, {40, 40}, {300, 20}})
    for (auto l : polar_test::all_layouts()) {
      const auto [m, n] = shape;
      BOOST_TEST_CONTEXT(m << "x" << n << " " << name(l)) {
        const auto ha = polar_test::random_matrix(m, n, 17);
        dmatrix<B, T> a(b, ha, l), q(b, m, n, l), r(b, n, n, l);
        b.qr(a.cview(), q.view, r.view);
        const auto hq = q.get(b), hr = r.get(b);
        const double tol = polar_test::tolerance<T>() * 100;
        BOOST_TEST(polar_test::distance(polar_test::product(hq, false, hr, false), ha) <= tol * ha.norm());
        auto qtq = polar_test::product(hq, true, hq, false);
        for (index i = 0; i < n; ++i) qtq(i, i) -= 1;
        BOOST_TEST(qtq.norm() <= tol);
        for (index i = 0; i < n; ++i) {
          BOOST_TEST(hr(i, i) >= 0.0);
          for (index j = 0; j < i; ++j) BOOST_TEST(hr(i, j) == 0.0);
        }
        BOOST_TEST(q.untouched_outside(b));
      }
    }
}

BOOST_AUTO_TEST_CASE_TEMPLATE(svd_reconstructs_with_descending_values, C, conformance_types) {
  using B = typename C::backend;
  using T = typename C::scalar;
  B b;
  for (auto shape : {std::pair<index, index>{12, 5}, {5, 12}, {30, 30}})
    for (auto l : {layout_kind::row_major, layout_kind::col_padded, layout_kind::strided}) {
      const auto [m, n] = shape;
      const index k = std::min(m, n);
      BOOST_TEST_CONTEXT(m << "x" << n << " " << name(l)) {
        const auto ha = polar_test::random_matrix(m, n, 18);
        dmatrix<B, T> a(b, ha, l), u(b, m, k, l), v(b, n, k, l);
        dvector<B, T> s(b, k);
        b.svd(a.cview(), u.view, s.view, v.view);
        const auto hu = u.get(b), hv = v.get(b);
        const auto hs = s.get(b);
        host_matrix us = hu;
        for (index i = 0; i < m; ++i)
          for (index j = 0; j < k; ++j) us(i, j) *= hs[std::size_t(j)];
        const double tol = polar_test::tolerance<T>() * 100;
        BOOST_TEST(polar_test::distance(polar_test::product(us, false, hv, true), ha) <= tol * ha.norm());
        for (index j = 0; j + 1 < k; ++j) BOOST_TEST(hs[std::size_t(j)] >= hs[std::size_t(j + 1)]);
        BOOST_TEST(hs[std::size_t(k - 1)] >= 0.0);
        auto utu = polar_test::product(hu, true, hu, false), vtv = polar_test::product(hv, true, hv, false);
        for (index i = 0; i < k; ++i) utu(i, i) -= 1, vtv(i, i) -= 1;
        BOOST_TEST(utu.norm() <= tol);
        BOOST_TEST(vtv.norm() <= tol);
      }
    }
}

BOOST_AUTO_TEST_CASE_TEMPLATE(solve_and_singular_systems, C, conformance_types) {
  using B = typename C::backend;
  using T = typename C::scalar;
  B b;
  auto ha = polar_test::random_matrix(16, 16, 19);
  for (index i = 0; i < 16; ++i) ha(i, i) += 4;  // well conditioned
  const auto hx = polar_test::random_matrix(16, 3, 20);
  const auto hb = polar_test::product(ha, false, hx, false);
  for (auto l : polar_test::all_layouts()) {
    BOOST_TEST_CONTEXT(name(l)) {
      dmatrix<B, T> a(b, ha, l), rhs(b, hb, l);
      b.solve(a.cview(), rhs.view);
      BOOST_TEST(polar_test::distance(rhs.get(b), hx) <= polar_test::tolerance<T>() * 100 * hx.norm());
    }
  }
  host_matrix sing(4, 4, 1.0);  // rank one
  dmatrix<B, T> s(b, sing), rhs(b, host_matrix(4, 1, 1.0));
  polar_test::check_throws<polar::numerical_error>([&] { b.solve(s.cview(), rhs.view); },
                                                   {"polar::solve", "4x4", "singular"});
  BOOST_TEST(polar_test::distance(rhs.get(b), host_matrix(4, 1, 1.0)) == 0.0);  // unchanged
}

BOOST_AUTO_TEST_CASE_TEMPLATE(bad_arguments_raise_typed_errors, C, conformance_types) {
  using B = typename C::backend;
  using T = typename C::scalar;
  B b;
  dmatrix<B, T> a(b, 3, 4), bb(b, 5, 2), c(b, 3, 2), sq(b, 4, 4);
  b.fill(c.view, T(7));
  // Inner dimensions differ.
  polar_test::check_throws<polar::shape_error>(
      [&] { b.gemm(T(1), polar::op::n, a.cview(), polar::op::n, bb.cview(), T(0), c.view); },
      {"polar::gemm", "3x4", "5x2", "inner dimensions 4 and 5"});
  BOOST_TEST(polar_test::distance(c.get(b), host_matrix(3, 2, 7.0)) == 0.0);  // untouched
  // Output of the wrong shape.
  polar_test::check_throws<polar::shape_error>(
      [&] { b.gemm(T(1), polar::op::n, a.cview(), polar::op::n, sq.cview(), T(0), c.view); },
      {"polar::gemm", "C is 3x2", "3x4"});
  // Overlapping output strides.
  polar::matrix_view<T> overlapping(c.view.data(), 3, 2, 1, 1, B::space);
  polar_test::check_throws<polar::shape_error>(
      [&] { b.fill(overlapping, T(0)); }, {"polar::fill", "overlap", "strides 1,1"});
  // A null pointer with a non-zero shape.
  polar::matrix_view<T> null_view(nullptr, 3, 2, 2, 1, B::space);
  polar_test::check_throws<polar::value_error>(
      [&] { b.scale(T(2), null_view); }, {"polar::scale", "null pointer", "3x2"});
  polar_test::check_throws<polar::value_error>(
      [&] { (void)b.norm(polar::matrix_view<const T>(nullptr, 1, 1, 1, 1, B::space)); },
      {"polar::norm", "null pointer"});
  // Negative extents and strides.
  polar_test::check_throws<polar::shape_error>(
      [&] { b.fill(polar::matrix_view<T>(c.view.data(), -1, 2, 2, 1, B::space), T(0)); },
      {"negative extent"});
  polar_test::check_throws<polar::shape_error>(
      [&] { b.fill(polar::matrix_view<T>(c.view.data() + 4, 3, 2, -2, 1, B::space), T(0)); },
      {"negative stride"});
  // Memory in the wrong space.
  const auto other = B::space == polar::memory_space::host ? polar::memory_space::device
                                                           : polar::memory_space::host;
  polar::matrix_view<T> elsewhere(c.view.data(), 3, 2, c.view.row_stride(), c.view.col_stride(), other);
  polar_test::check_throws<polar::memory_space_error>(
      [&] { b.scale(T(2), elsewhere); }, {"polar::scale", "x is in", polar::to_string(other)});
  // Output sharing memory with an input.
  polar_test::check_throws<polar::value_error>(
      [&] {
        b.gemm(T(1), polar::op::n, polar::matrix_view<const T>(sq.view.block(0, 0, 4, 2)), polar::op::n,
               polar::matrix_view<const T>(c.view.block(0, 0, 2, 2)), T(0), sq.view.block(0, 1, 4, 2));
      },
      {"polar::gemm", "shares memory"});
  polar_test::check_throws<polar::value_error>(
      [&] { b.axpby(T(1), polar::matrix_view<const T>(sq.view.block(0, 0, 2, 2)), T(1), sq.view.block(1, 1, 2, 2)); },
      {"polar::axpby", "shares memory"});
  // syrk: C must match op(A) op(A)^T.
  polar_test::check_throws<polar::shape_error>(
      [&] { b.syrk(polar::uplo::lower, T(1), polar::op::t, a.cview(), T(0), c.view); },
      {"polar::syrk", "C is 3x2", "4x4"});
  // Reductions into vectors of the wrong length.
  dvector<B, T> v(b, 5);
  polar_test::check_throws<polar::shape_error>(
      [&] { b.row_norms(a.cview(), v.view); }, {"polar::row_norms", "5 elements", "3"});
  // Factorization shapes.
  polar_test::check_throws<polar::shape_error>(
      [&] { b.qr(a.cview(), a.view, sq.view); }, {"polar::qr", "3x4", "rows >= cols"});
  polar_test::check_throws<polar::shape_error>(
      [&] { b.solve(a.cview(), c.view); }, {"polar::solve", "square"});
  // Random streams: sample beyond 16 bits.
  polar_test::check_throws<polar::value_error>(
      [&] { b.fill_random(c.view, polar::rng_key{1, 0, 0, 70000}, polar::distribution::normal); },
      {"polar::fill_random", "70000"});
  // Batches: counts differ.
  polar::batch_view<const T> s2(a.cview(), 2, 0), s3(bb.cview(), 3, 0);
  polar::batch_view<T> c2(c.view, 2, 100);
  polar_test::check_throws<polar::shape_error>(
      [&] { b.gemm_batched(T(1), polar::op::n, s2, polar::op::n, s3, T(0), c2); },
      {"polar::gemm_batched", "2 matrices", "3"});
}
