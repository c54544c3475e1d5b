using System.Runtime.InteropServices;

namespace Attention.Native.Interop;

// The C library, Unix only: what .NET does not expose about files, namely the effective user id and a file's
// owner and type. statx, not stat: one struct layout on every Linux architecture. "libc" resolves to the
// main program, which always links the C library, so no soname (glibc's libc.so.6, musl's) is guessed.
internal static unsafe partial class NativeMethods
{
    internal const string LibcLibrary = "libc";

    internal const int AT_FDCWD = -100;
    internal const int AT_SYMLINK_NOFOLLOW = 0x100;
    internal const uint STATX_TYPE = 0x1;
    internal const uint STATX_MODE = 0x2;
    internal const uint STATX_UID = 0x8;
    internal const uint STATX_INO = 0x100;
    internal const uint STATX_SIZE = 0x200;
    internal const int ENOENT = 2;
    internal const int ENOTDIR = 20;
    internal const int ENAMETOOLONG = 36;

    [LibraryImport(LibcLibrary)]
    internal static partial uint geteuid();

    [LibraryImport(LibcLibrary, SetLastError = true)]
    internal static partial int statx(int dirfd, byte* pathname, int flags, uint mask, StatxBuffer* statxbuf);
}

/// <summary>The fields read of Linux <c>struct statx</c> (256 bytes in all), at their offsets in the kernel's header.</summary>
[StructLayout(LayoutKind.Explicit, Size = 256)]
internal struct StatxBuffer
{
    [FieldOffset(0)]
    public uint Mask;
    [FieldOffset(20)]
    public uint Uid;
    [FieldOffset(28)]
    public ushort Mode;
    [FieldOffset(32)]
    public ulong Inode;
    [FieldOffset(40)]
    public ulong Size;
    [FieldOffset(136)]
    public uint DevMajor;
    [FieldOffset(140)]
    public uint DevMinor;
}
