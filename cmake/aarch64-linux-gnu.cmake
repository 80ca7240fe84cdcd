# Cross-compiling for 64-bit ARM Linux from a Debian/Ubuntu x86-64 host, with the tests run under
# qemu-user. Needs g++-aarch64-linux-gnu, qemu-user and the arm64 builds of the libraries
# (`dpkg --add-architecture arm64`; scripts/check_aarch64.sh installs them).
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
# Debian's multiarch layout: arm64 libraries in /usr/lib/aarch64-linux-gnu, headers shared.
set(CMAKE_LIBRARY_ARCHITECTURE aarch64-linux-gnu)
set(ENV{PKG_CONFIG_LIBDIR} "/usr/lib/aarch64-linux-gnu/pkgconfig:/usr/share/pkgconfig")
# The arm64 loader and libraries are installed natively (multiarch), so qemu needs no sysroot.
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64)
