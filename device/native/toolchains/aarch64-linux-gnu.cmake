# Static glibc arm64 executables (run from `adb shell` on Android phones, on arm64 Linux boards,
# and here under qemu-aarch64-static). Debian: g++-aarch64-linux-gnu, qemu-user-static.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64-static)
set(CMAKE_EXE_LINKER_FLAGS_INIT "-static")
# XNNPACK links ${LIBM}: find_library(m) would give libm.so, which the -static runner cannot link,
# and libm.a cannot go into the shared JNI library. Plain "m" (-lm) lets each link pick its own.
set(LIBM m CACHE STRING "libm for XNNPACK" FORCE)
