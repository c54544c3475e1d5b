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
    internal const uint STATX_SIZE = 0x200;
    internal const int ENOENT = 2;
    internal const int ENOTDIR = 20;

    [LibraryImport(LibcLibrary)]
    internal static partial uint geteuid();

    [LibraryImport(LibcLibrary, SetLastError = true)]
    internal static partial int statx(int dirfd, byte* pathname, int flags, uint mask, StatxBuffer* statxbuf);
}

/// <summary>The leading fields of Linux <c>struct statx</c> (256 bytes in all; the rest is not read).</summary>
[StructLayout(LayoutKind.Sequential, Size = 256)]
internal struct StatxBuffer
{
    public uint Mask;
    public uint BlockSize;
    public ulong Attributes;
    public uint LinkCount;
    public uint Uid;
    public uint Gid;
    public ushort Mode;
    public ulong Inode;
    public ulong Size;
}
