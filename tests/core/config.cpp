// Tests of polar/core/config.hpp.
#include "polar/core/config.hpp"

#include <boost/test/unit_test.hpp>
#include <string>
#include <type_traits>

namespace {
POLAR_HOST_DEVICE int twice(int x) { return 2 * x; }
}  // namespace

BOOST_AUTO_TEST_SUITE(core_config)

BOOST_AUTO_TEST_CASE(version_macros_agree) {
  constexpr auto v = polar::version();
  BOOST_TEST(v.major == POLAR_VERSION_MAJOR);
  BOOST_TEST(v.minor == POLAR_VERSION_MINOR);
  BOOST_TEST(v.patch == POLAR_VERSION_PATCH);
  BOOST_TEST(POLAR_VERSION == v.major * 10000 + v.minor * 100 + v.patch);
  const std::string s = POLAR_VERSION_STRING;
  BOOST_TEST(s == std::to_string(v.major) + "." + std::to_string(v.minor) + "." + std::to_string(v.patch));
#ifdef POLAR_EXPECTED_VERSION
  BOOST_TEST(s == POLAR_EXPECTED_VERSION);  // the CMake project's version
#endif
}

BOOST_AUTO_TEST_CASE(host_device_is_plain_inline_without_nvcc) {
  BOOST_TEST(POLAR_CUDA_COMPILER == 0);
  BOOST_TEST(POLAR_DEVICE_CODE == 0);
  BOOST_TEST(twice(21) == 42);
  static_assert(std::is_same_v<polar::index, std::ptrdiff_t>);
}

BOOST_AUTO_TEST_SUITE_END()
