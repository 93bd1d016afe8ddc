# Static glibc x86-64 executables (x86_64 Android emulators and Linux hosts), built with the host g++.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR x86_64)
set(CMAKE_C_COMPILER gcc)
set(CMAKE_CXX_COMPILER g++)
set(CMAKE_EXE_LINKER_FLAGS_INIT "-static")
set(LIBM /usr/lib/x86_64-linux-gnu/libm.a CACHE FILEPATH "static libm")
