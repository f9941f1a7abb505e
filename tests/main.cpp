// The test runner of polar's unit tests (Boost.Test, one executable).
#define BOOST_TEST_MODULE polar
#include <boost/test/unit_test.hpp>
