# libuv and liblz4, found through pkg-config (the system's packages). A missing
# package stops the configure step with the names of the packages to install,
# per distribution, instead of CMake's generic "package not found".
include_guard(GLOBAL)

set(_cr_install_hint
  "  Debian/Ubuntu:  apt-get install build-essential pkg-config libuv1-dev liblz4-dev\n"
  "  Fedora/RHEL:    dnf install gcc-c++ pkgconf-pkg-config libuv-devel lz4-devel\n"
  "  Alpine:         apk add build-base pkgconf libuv-dev lz4-dev\n"
  "  Arch:           pacman -S base-devel pkgconf libuv lz4\n"
  "  macOS:          brew install pkg-config libuv lz4 (the uv engine is Linux-only)")

find_package(PkgConfig QUIET)
if(NOT PKG_CONFIG_FOUND)
  string(CONCAT _cr_msg
    "canonical-raft: pkg-config was not found. It is needed to locate libuv and liblz4 "
    "(headers and libraries). Install the build dependencies, e.g.\n" ${_cr_install_hint})
  message(FATAL_ERROR "${_cr_msg}")
endif()

pkg_check_modules(LIBUV QUIET IMPORTED_TARGET libuv)
pkg_check_modules(LZ4 QUIET IMPORTED_TARGET liblz4)
set(_cr_missing "")
if(NOT LIBUV_FOUND)
  list(APPEND _cr_missing "libuv (uv.h, pkg-config module libuv)")
endif()
if(NOT LZ4_FOUND)
  list(APPEND _cr_missing "liblz4 (lz4.h, pkg-config module liblz4)")
endif()
if(_cr_missing)
  list(JOIN _cr_missing ", " _cr_missing)
  string(CONCAT _cr_msg
    "canonical-raft: missing build dependencies: ${_cr_missing}. "
    "Install their development packages, e.g.\n" ${_cr_install_hint}
    "\nthen build again (a non-standard prefix: add its lib/pkgconfig to PKG_CONFIG_PATH).")
  message(FATAL_ERROR "${_cr_msg}")
endif()
