// Tests of polar/core/error.hpp.
#include "polar/core/error.hpp"

#include <boost/test/unit_test.hpp>
#include <string>
#include <type_traits>

BOOST_AUTO_TEST_SUITE(core_error)

BOOST_AUTO_TEST_CASE(errors_share_one_base_and_name_the_operation) {
  try {
    throw polar::non_finite_error("polar::step", "G(3, 4) is nan");
  } catch (const polar::error& e) {
    BOOST_TEST(e.operation() == "polar::step");
    BOOST_TEST(std::string(e.what()) == "polar::step: G(3, 4) is nan");
  }
  BOOST_TEST((std::is_base_of_v<polar::error, polar::shape_error>));
  BOOST_TEST((std::is_base_of_v<polar::error, polar::memory_space_error>));
  BOOST_TEST((std::is_base_of_v<polar::error, polar::unsupported_error>));
  BOOST_TEST((std::is_base_of_v<polar::error, polar::value_error>));
  BOOST_TEST((std::is_base_of_v<polar::error, polar::numerical_error>));
  BOOST_TEST((std::is_base_of_v<std::runtime_error, polar::error>));
}

BOOST_AUTO_TEST_CASE(messages_are_built_from_values) {
  const std::string m = polar::detail::concat("A is ", 3, "x", 4, ", lr ", 0.5);
  BOOST_TEST(m == "A is 3x4, lr 0.5");
  try {
    polar::detail::raise<polar::shape_error>("polar::gemm", "C is ", 2, "x", 2);
  } catch (const polar::shape_error& e) {
    BOOST_TEST(std::string(e.what()) == "polar::gemm: C is 2x2");
  }
}

BOOST_AUTO_TEST_SUITE_END()
