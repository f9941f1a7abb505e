// Tests of polar/core/tensor_traits.hpp and polar/core/eigen_traits.hpp,
// including a user's own tensor type joining by a trait specialization.
#include "polar/core/tensor_traits.hpp"

#include <Eigen/Core>
#include <boost/test/unit_test.hpp>
#include <vector>

#include "polar/core/eigen_traits.hpp"

namespace user {
// A user's tensor type: it owns its memory and knows nothing of polar.
class tensor {
 public:
  tensor(int rows, int cols) : rows_(rows), cols_(cols), data_(std::size_t(rows * cols)) {}
  float* data() { return data_.data(); }
  const float* data() const { return data_.data(); }
  int rows() const { return rows_; }
  int cols() const { return cols_; }

 private:
  int rows_, cols_;
  std::vector<float> data_;
};
struct not_a_tensor {};
}  // namespace user

template <>
struct polar::tensor_traits<user::tensor> {
  using scalar = float;
  static polar::matrix_view<float> view(user::tensor& t) {
    return polar::row_major_view(t.data(), t.rows(), t.cols());
  }
  static polar::matrix_view<const float> view(const user::tensor& t) {
    return polar::row_major_view(t.data(), t.rows(), t.cols());
  }
};

BOOST_AUTO_TEST_SUITE(core_tensor_traits)

BOOST_AUTO_TEST_CASE(user_type_joins_without_copy) {
  static_assert(polar::is_tensor_v<user::tensor>);
  static_assert(!polar::is_tensor_v<user::not_a_tensor>);
  static_assert(std::is_same_v<polar::scalar_t<const user::tensor&>, float>);
  user::tensor t(3, 4);
  auto v = polar::make_view(t);
  static_assert(std::is_same_v<decltype(v), polar::matrix_view<float>>);
  BOOST_TEST(v.data() == t.data());  // the same memory
  v(2, 1) = 5.0f;
  BOOST_TEST(t.data()[9] == 5.0f);
  const user::tensor& ct = t;
  auto cv = polar::make_view(ct);
  static_assert(std::is_same_v<decltype(cv), polar::matrix_view<const float>>);
  BOOST_TEST(cv(2, 1) == 5.0f);
}

BOOST_AUTO_TEST_CASE(eigen_matrices_of_both_orders) {
  Eigen::MatrixXd cm(3, 4);
  Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> rm(3, 4);
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 4; ++j) cm(i, j) = rm(i, j) = 10 * i + j;
  const auto a = polar::make_view(cm), b = polar::make_view(rm);
  BOOST_TEST(a.data() == cm.data());
  BOOST_TEST(b.data() == rm.data());
  BOOST_TEST(a.cols_contiguous());
  BOOST_TEST(b.rows_contiguous());
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 4; ++j) {
      BOOST_TEST(a(i, j) == cm(i, j));
      BOOST_TEST(b(i, j) == rm(i, j));
    }
  Eigen::Matrix4f fixed = Eigen::Matrix4f::Identity();
  BOOST_TEST(polar::make_view(fixed)(2, 2) == 1.0f);
  Eigen::ArrayXXf arr = Eigen::ArrayXXf::Constant(2, 2, 3.0f);
  BOOST_TEST(polar::make_view(arr)(1, 0) == 3.0f);
}

BOOST_AUTO_TEST_CASE(eigen_blocks_maps_and_refs) {
  Eigen::MatrixXf m(6, 5);
  for (int i = 0; i < 6; ++i)
    for (int j = 0; j < 5; ++j) m(i, j) = float(10 * i + j);
  auto blk = m.block(1, 2, 3, 2);
  const auto vb = polar::make_view(blk);
  BOOST_TEST(vb.rows() == 3);
  BOOST_TEST(vb.col_stride() == 6);  // the parent's leading dimension
  BOOST_TEST(vb(2, 1) == m(3, 3));
  BOOST_TEST(vb.data() == &m(1, 2));

  Eigen::Map<Eigen::MatrixXf, 0, Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>> strided(
      m.data(), 3, 2, Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>(12, 2));
  const auto vs = polar::make_view(strided);
  BOOST_TEST(vs.row_stride() == 2);
  BOOST_TEST(vs.col_stride() == 12);
  BOOST_TEST(vs(2, 1) == strided(2, 1));

  Eigen::Ref<Eigen::MatrixXf> ref = m.middleCols(1, 3);
  const auto vr = polar::make_view(ref);
  BOOST_TEST(vr.data() == &m(0, 1));
  BOOST_TEST(vr(5, 2) == m(5, 3));

  const Eigen::MatrixXf& cm = m;
  const auto cv = polar::make_view(cm);
  static_assert(std::is_same_v<decltype(cv), const polar::matrix_view<const float>>);

  Eigen::Map<const Eigen::MatrixXf> cmap(m.data(), 6, 5);
  const auto vm = polar::make_view(cmap);
  static_assert(std::is_same_v<decltype(vm), const polar::matrix_view<const float>>);

  Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> r(4, 6);
  r.setZero();
  auto rb = r.block(1, 1, 2, 3);
  polar::make_view(rb)(1, 2) = 9.0f;
  BOOST_TEST(r(2, 3) == 9.0f);

  Eigen::VectorXd vec = Eigen::VectorXd::LinSpaced(5, 0, 4);
  const auto vv = polar::make_view(vec);
  BOOST_TEST(vv.rows() == 5);
  BOOST_TEST(vv.cols() == 1);
  BOOST_TEST(vv(3, 0) == 3.0);
  // Temporaries that point into m (a block, a column) are views of m.
  const auto tmp_block = polar::make_view(m.block(1, 1, 2, 2));
  BOOST_TEST(tmp_block.data() == &m(1, 1));
  BOOST_TEST(tmp_block.rows() == 2);
  static_assert(polar::detail::is_borrowed<decltype(m.block(1, 1, 2, 2))>::value);
  static_assert(!polar::detail::is_borrowed<std::remove_reference_t<decltype(m)>>::value);
  // Expressions have no memory and are not tensors (make_view says to
  // evaluate them, at compile time).
  static_assert(polar::detail::is_unevaluated_expression<std::remove_cv_t<decltype(m * 2.0f)>>::value);
  static_assert(!polar::is_tensor_v<decltype(m * 2.0f)>);
  static_assert(!polar::is_tensor_v<decltype(m.transpose() * m)>);
}

BOOST_AUTO_TEST_CASE(raw_pointers_with_a_shape) {
  std::vector<double> buf(12);
  for (std::size_t i = 0; i < buf.size(); ++i) buf[i] = double(i);
  const auto r = polar::make_view(polar::with_shape(buf.data(), 3, 4));
  BOOST_TEST(r(1, 2) == 6.0);
  const auto c = polar::make_view(polar::with_shape(buf.data(), 3, 4, polar::layout::col_major));
  BOOST_TEST(c(1, 2) == 7.0);
  const auto p = polar::make_view(polar::with_shape(buf.data(), 2, 3, polar::layout::row_major, 5));
  BOOST_TEST(p(1, 2) == 7.0);
  const double* cp = buf.data();
  const auto ro = polar::make_view(polar::with_shape(cp, 3, 4));
  static_assert(std::is_same_v<decltype(ro), const polar::matrix_view<const double>>);
  BOOST_TEST(ro.space() == polar::memory_space::host);
}

BOOST_AUTO_TEST_SUITE_END()
