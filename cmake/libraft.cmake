# libraft 0.22.1 compiled from its pinned release source into a static library.
# The source is fetched (sha256-checked) by third_party/fetch_libraft.sh; libraft
# builds with autotools upstream, so the source list below is ours.
include(CheckIncludeFile)
# Dependencies first: a missing libuv/lz4 is reported before anything is unpacked.
include(${CMAKE_CURRENT_LIST_DIR}/deps.cmake)  # PkgConfig::LIBUV, PkgConfig::LZ4

set(LIBRAFT_VERSION 0.22.1)
set(LIBRAFT_SRC "${PROJECT_SOURCE_DIR}/third_party/libraft-${LIBRAFT_VERSION}")
# Always run: it fetches once, and (re)applies our fixes to the release source.
execute_process(COMMAND bash "${PROJECT_SOURCE_DIR}/third_party/fetch_libraft.sh"
                RESULT_VARIABLE fetch_rc)
if(NOT fetch_rc EQUAL 0 OR NOT EXISTS "${LIBRAFT_SRC}/include/raft.h.in")
  message(FATAL_ERROR "could not fetch the libraft ${LIBRAFT_VERSION} source; "
                      "see third_party/fetch_libraft.sh")
endif()

# raft.h is generated from raft.h.in: the only substitution is the legacy (v0) switch.
set(enable_v0 yes)
# The sources include "../include/raft.h", so it is generated beside raft.h.in
# (inside the fetched, git-ignored folder).
set(LIBRAFT_INCLUDE "${LIBRAFT_SRC}/include")
configure_file("${LIBRAFT_SRC}/include/raft.h.in" "${LIBRAFT_INCLUDE}/raft.h" @ONLY)

set(LIBRAFT_CORE_SOURCES
  byte client compress configuration convert election entry err heap membership
  message progress random raft recv recv_append_entries recv_append_entries_result
  recv_request_vote recv_request_vote_result recv_install_snapshot recv_timeout_now
  restore replication state syscall timeout tracing trail
  # legacy v0 API (raft_io / raft_fsm), used by raft_uv and the fixture
  log legacy snapshot
  fixture
  # raft_uv: on-disk log and TCP transport
  uv uv_append uv_encoding uv_finalize uv_fs uv_ip uv_list uv_metadata uv_os
  uv_prepare uv_recv uv_segment uv_send uv_snapshot uv_tcp uv_tcp_listen
  uv_tcp_connect uv_truncate uv_writer)
list(TRANSFORM LIBRAFT_CORE_SOURCES PREPEND "${LIBRAFT_SRC}/src/")
list(TRANSFORM LIBRAFT_CORE_SOURCES APPEND ".c")


check_include_file(linux/aio_abi.h HAVE_LINUX_AIO_ABI_H)
check_include_file(linux/io_uring.h HAVE_LINUX_IO_URING_H)

add_library(raft_static STATIC ${LIBRAFT_CORE_SOURCES})
set_target_properties(raft_static PROPERTIES
  C_STANDARD 11 C_STANDARD_REQUIRED ON POSITION_INDEPENDENT_CODE ON
  C_VISIBILITY_PRESET hidden)
target_include_directories(raft_static PUBLIC "${LIBRAFT_INCLUDE}")
target_compile_definitions(raft_static PRIVATE
  _GNU_SOURCE V0_ENABLED LZ4_AVAILABLE
  $<$<BOOL:${HAVE_LINUX_AIO_ABI_H}>:HAVE_LINUX_AIO_ABI_H=1>
  $<$<BOOL:${HAVE_LINUX_IO_URING_H}>:HAVE_LINUX_IO_URING_H=1>
  $<$<NOT:$<BOOL:${CANONICAL_RAFT_DEBUG}>>:NDEBUG>)
target_compile_options(raft_static PRIVATE -fno-omit-frame-pointer -w)
target_link_libraries(raft_static PUBLIC PkgConfig::LIBUV PkgConfig::LZ4)
add_library(libraft ALIAS raft_static)
