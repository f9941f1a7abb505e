# Checks that the code block a document marks as a program is, character for
# character, the example file the tests build and run:
#
#   <!-- program: examples/optimizer.cpp -->
#   ```cpp
#   ... the whole file ...
#   ```
#
# Run as cmake -DDOC=<markdown> -DSOURCE_DIR=<project root> -P doc_program.cmake.
file(READ "${DOC}" doc)
string(REGEX MATCHALL "<!-- program: [^ ]+ -->" marks "${doc}")
if(NOT marks)
  message(FATAL_ERROR "doc_program: ${DOC} marks no program")
endif()
foreach(mark IN LISTS marks)
  string(REGEX REPLACE "<!-- program: ([^ ]+) -->" "\\1" path "${mark}")
  string(FIND "${doc}" "${mark}" at)
  string(SUBSTRING "${doc}" ${at} -1 rest)
  string(FIND "${rest}" "```cpp\n" open)
  if(open LESS 0)
    message(FATAL_ERROR "doc_program: no ```cpp block after ${mark} in ${DOC}")
  endif()
  math(EXPR start "${open} + 7")
  string(SUBSTRING "${rest}" ${start} -1 body)
  string(FIND "${body}" "```\n" close)
  string(SUBSTRING "${body}" 0 ${close} block)
  file(READ "${SOURCE_DIR}/${path}" source)
  if(NOT block STREQUAL source)
    message(FATAL_ERROR "doc_program: the block after ${mark} in ${DOC} is not ${path} as it stands; copy the file into the block")
  endif()
  message(STATUS "doc_program: ${DOC} shows ${path}")
endforeach()
message(STATUS "doc_program: ok")
