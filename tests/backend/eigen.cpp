// The conformance battery on the Eigen backend, float and double.
#include "polar/backend/eigen.hpp"

#include "conformance/backend_conformance.hpp"

namespace eigen_conformance {
using conformance_types = boost::mpl::list<polar_test::config<polar::backend::eigen, float>,
                                           polar_test::config<polar::backend::eigen, double>>;

BOOST_AUTO_TEST_SUITE(eigen_backend)
#include "conformance/backend_conformance.ipp"

BOOST_AUTO_TEST_CASE(is_a_backend) {
  static_assert(polar::is_backend_v<polar::backend::eigen>);
  BOOST_TEST(std::string(polar::backend::eigen::name()) == "eigen");
  BOOST_TEST(polar::backend::eigen::threads() >= 1);
}
BOOST_AUTO_TEST_SUITE_END()
}  // namespace eigen_conformance
