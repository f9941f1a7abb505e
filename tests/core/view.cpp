// Tests of polar/core/view.hpp and polar/core/check.hpp.
#include "polar/core/view.hpp"

#include <boost/test/unit_test.hpp>
#include <numeric>
#include <vector>

#include "polar/core/check.hpp"
#include "support.hpp"

BOOST_AUTO_TEST_SUITE(core_view)

BOOST_AUTO_TEST_CASE(element_access_follows_strides) {
  std::vector<float> buf(24);
  std::iota(buf.begin(), buf.end(), 0.0f);
  const auto r = polar::row_major_view(buf.data(), 3, 4);
  const auto c = polar::col_major_view(buf.data(), 3, 4);
  BOOST_TEST(r(1, 2) == 6.0f);
  BOOST_TEST(c(1, 2) == 7.0f);
  BOOST_TEST(r.rows_contiguous());
  BOOST_TEST(!r.cols_contiguous());
  BOOST_TEST(r.is_contiguous());
  BOOST_TEST(c.is_contiguous());
  const auto padded = polar::row_major_view(buf.data(), 3, 4, 6);
  BOOST_TEST(padded(2, 3) == 15.0f);
  BOOST_TEST(!padded.is_contiguous());
  BOOST_TEST(padded.span() == 16);
  const auto t = r.transpose();
  BOOST_TEST(t.rows() == 4);
  BOOST_TEST(t(2, 1) == r(1, 2));
  const auto blk = r.block(1, 1, 2, 2);
  BOOST_TEST(blk(1, 1) == r(2, 2));
  BOOST_TEST(r.row(2)[3] == 11.0f);
  BOOST_TEST(r.col(1)[2] == 9.0f);
  polar::matrix_view<const float> cr = r;  // read-write converts to read-only
  BOOST_TEST(cr(2, 3) == 11.0f);
  BOOST_TEST(polar::as_const(r).data() == r.data());
}

BOOST_AUTO_TEST_CASE(batches_index_matrices) {
  std::vector<double> buf(2 * 3 * 4);
  std::iota(buf.begin(), buf.end(), 0.0);
  const auto s = polar::row_major_batch(buf.data(), 2, 3, 4);
  BOOST_TEST(s.count() == 2);
  BOOST_TEST(s[1](0, 0) == 12.0);
  BOOST_TEST(s[1](2, 3) == 23.0);
  BOOST_TEST(s.size() == 24);
  BOOST_TEST(s.transpose()[1](3, 2) == 23.0);
  polar::batch_view<const double> cs = s;
  BOOST_TEST(cs[0](1, 1) == 5.0);
}

BOOST_AUTO_TEST_CASE(checks_accept_valid_views) {
  std::vector<float> buf(64);
  BOOST_CHECK_NO_THROW(polar::check_output("op", "x", polar::row_major_view(buf.data(), 4, 4)));
  BOOST_CHECK_NO_THROW(polar::check_output("op", "x", polar::col_major_view(buf.data(), 4, 4, 6)));
  BOOST_CHECK_NO_THROW(polar::check_output("op", "x", polar::matrix_view<float>(buf.data(), 3, 4, 9, 2)));
  // Interleaved but disjoint: offsets 0, 2, 3, 5.
  BOOST_CHECK_NO_THROW(polar::check_output("op", "x", polar::matrix_view<float>(buf.data(), 2, 2, 3, 2)));
  // Any strides are fine for a single row, column or element.
  BOOST_CHECK_NO_THROW(polar::check_output("op", "x", polar::matrix_view<float>(buf.data(), 1, 5, 0, 1)));
  BOOST_CHECK_NO_THROW(polar::check_output("op", "x", polar::matrix_view<float>(nullptr, 0, 5, 5, 1)));
  BOOST_CHECK_NO_THROW(polar::check_output("op", "x", polar::row_major_batch(buf.data(), 4, 4, 4)));
  // Inputs may overlap (broadcast a row).
  BOOST_CHECK_NO_THROW(polar::check_input("op", "x", polar::matrix_view<const float>(buf.data(), 4, 4, 0, 1)));
}

BOOST_AUTO_TEST_CASE(checks_reject_bad_views_with_typed_errors) {
  std::vector<float> buf(64);
  polar_test::check_throws<polar::shape_error>(
      [&] { polar::check_output("polar::op", "W", polar::matrix_view<float>(buf.data(), 4, 4, 2, 1)); },
      {"polar::op: W is written but its strides overlap", "4x4 (strides 2,1, host)"});
  polar_test::check_throws<polar::shape_error>(
      [&] { polar::check_output("polar::op", "W", polar::matrix_view<float>(buf.data(), 4, 4, 0, 1)); },
      {"overlap"});
}

BOOST_AUTO_TEST_CASE(transposed_stack_is_disjoint_and_overlapping_stack_is_not) {
  std::vector<float> buf(64);
  BOOST_CHECK_NO_THROW(polar::check_output("op", "W", polar::row_major_batch(buf.data(), 4, 4, 4).transpose()));
  polar::batch_view<float> overlapping(polar::row_major_view(buf.data(), 4, 4), 3, 8);
  polar_test::check_throws<polar::shape_error>(
      [&] { polar::check_output("polar::op", "S", overlapping); },
      {"polar::op: S is written but its strides overlap", "3 x 4x4", "batch stride 8"});
}

BOOST_AUTO_TEST_CASE(null_pointer_negative_extent_and_space_errors) {
  polar_test::check_throws<polar::value_error>(
      [&] { polar::check_input("polar::op", "G", polar::matrix_view<const float>(nullptr, 2, 3, 3, 1)); },
      {"polar::op: G is a null pointer with shape 2x3"});
  float x = 0;
  polar_test::check_throws<polar::shape_error>(
      [&] { polar::check_input("polar::op", "G", polar::matrix_view<const float>(&x, -2, 3, 3, 1)); },
      {"negative extent", "-2x3"});
  polar_test::check_throws<polar::memory_space_error>(
      [&] {
        polar::check_space("polar::op", "G",
                           polar::matrix_view<float>(&x, 1, 1, 1, 1, polar::memory_space::device),
                           polar::memory_space::host);
      },
      {"G is in device memory but this backend needs host memory"});
  std::vector<float> buf(16);
  const auto a = polar::row_major_view(buf.data(), 4, 4);
  polar_test::check_throws<polar::shape_error>(
      [&] { polar::check_same_shape("polar::op", "W", a, "G", a.block(0, 0, 2, 4)); },
      {"W is 4x4 but G is 2x4"});
  BOOST_TEST(polar::may_overlap(a.block(0, 0, 2, 2), a.block(1, 1, 2, 2)));
  BOOST_TEST(!polar::may_overlap(a.block(0, 0, 2, 4), a.block(2, 0, 2, 4)));
  polar_test::check_throws<polar::value_error>(
      [&] { polar::check_no_alias("polar::step", "W", a, "G", polar::as_const(a.block(1, 0, 1, 4))); },
      {"polar::step: W", "shares memory with G"});
}

BOOST_AUTO_TEST_SUITE_END()
