# Static glibc x86-64 executables (x86_64 Android emulators and Linux hosts), built with the host g++.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR x86_64)
set(CMAKE_C_COMPILER gcc)
set(CMAKE_CXX_COMPILER g++)
set(CMAKE_EXE_LINKER_FLAGS_INIT "-static")
# XNNPACK links ${LIBM}: find_library(m) would give libm.so, which the -static runner cannot link,
# and libm.a cannot go into the shared JNI library. Plain "m" (-lm) lets each link pick its own.
set(LIBM m CACHE STRING "libm for XNNPACK" FORCE)
