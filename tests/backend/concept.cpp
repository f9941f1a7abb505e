// Tests of polar/backend/concept.hpp: the archetype is a backend, other
// types are not.
#include "polar/backend/concept.hpp"

#include <boost/test/unit_test.hpp>
#include <string>

namespace {
struct not_a_backend {};
struct almost_a_backend {  // has space and name but no operations
  static constexpr polar::memory_space space = polar::memory_space::host;
  static const char* name() { return "almost"; }
};
}  // namespace

BOOST_AUTO_TEST_SUITE(backend_concept)

BOOST_AUTO_TEST_CASE(archetype_satisfies_the_concept) {
  static_assert(polar::is_backend_v<polar::backend::archetype>, POLAR_BACKEND_CONCEPT_MESSAGE);
  static_assert(!polar::is_backend_v<not_a_backend>);
  static_assert(!polar::is_backend_v<almost_a_backend>);
  static_assert(!polar::is_backend_v<int>);
  BOOST_TEST(std::string(polar::backend::archetype::name()) == "archetype");
  // Every member of the archetype compiles for float and double.
  polar::backend::archetype b;
  polar::matrix_view<double> m;
  polar::vector_view<double> v;
  polar::batch_view<double> s;
  b.gemm(1.0, polar::op::n, m, polar::op::t, m, 0.0, m);
  b.syrk(polar::uplo::upper, 1.0, polar::op::n, m, 0.0, m);
  b.gemm_batched(1.0, polar::op::n, s, polar::op::n, s, 0.0, s);
  b.syrk_batched(polar::uplo::lower, 1.0, polar::op::n, s, 0.0, s);
  b.symmetrize(polar::uplo::lower, m);
  b.scale(2.0, m);
  b.axpby(1.0, m, 1.0, m);
  BOOST_TEST(b.dot(m, m) == 0.0);
  BOOST_TEST(b.norm(m) == 0.0);
  BOOST_TEST(b.max_abs(m) == 0.0);
  BOOST_TEST(b.sum(m) == 0.0);
  BOOST_TEST(b.all_finite(m));
  b.row_norms(m, v);
  b.col_norms(m, v);
  b.row_sums(m, v);
  b.col_sums(m, v);
  b.scale_rows(v, m);
  b.scale_cols(v, m);
  b.map([](double x) { return x; }, m, m);
  b.fill_random(m, polar::rng_key{}, polar::distribution::rademacher);
  b.qr(m, m, m);
  b.svd(m, m, v, m);
  b.solve(m, m);
  auto buf = b.allocate<float>(3);
  BOOST_TEST(buf.size() == 0);
  b.copy(m, m);
  b.copy_from_host(m, m);
  b.copy_to_host(m, m);
  b.fill(m, 1.0);
  b.synchronize();
}

BOOST_AUTO_TEST_SUITE_END()
