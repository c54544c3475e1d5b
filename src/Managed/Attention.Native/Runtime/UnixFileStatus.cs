using System.Runtime.InteropServices;
using Attention.Native.Interop;
using static Attention.Native.Interop.NativeMethods;

namespace Attention.Native.Runtime;

/// <summary>The kinds of file the kernel cache tells apart.</summary>
internal enum UnixFileKind
{
    Missing,
    Regular,
    Directory,
    SymbolicLink,
    Other,
}

/// <summary>What <c>statx</c> says about a path: its kind, owner, permission bits and size.</summary>
internal readonly record struct UnixFileStatus(UnixFileKind Kind, uint Owner, UnixFileMode Mode, long Size)
{
    /// <summary>The effective user id of this process.</summary>
    public static uint EffectiveUserId => geteuid();

    /// <summary>
    /// The status of <paramref name="path"/>, of the link itself unless <paramref name="followLinks"/>; a path
    /// that does not exist is <see cref="UnixFileKind.Missing"/>. Throws <see cref="IOException"/> naming the
    /// errno for any other failure, <see cref="EntryPointNotFoundException"/> where the C library has no statx.
    /// </summary>
    public static unsafe UnixFileStatus Of(string path, bool followLinks)
    {
        StatxBuffer buffer;
        nint name = Marshal.StringToCoTaskMemUTF8(path);
        int result;
        try
        {
            result = statx(AT_FDCWD, (byte*)name, followLinks ? 0 : AT_SYMLINK_NOFOLLOW, STATX_TYPE | STATX_MODE | STATX_UID | STATX_SIZE, &buffer);
        }
        finally
        {
            Marshal.FreeCoTaskMem(name);
        }
        if (result != 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            return errno is ENOENT or ENOTDIR
                ? new UnixFileStatus(UnixFileKind.Missing, 0, 0, 0)
                : throw new IOException($"statx({path}) failed: {Marshal.GetPInvokeErrorMessage(errno)} (errno {errno})");
        }
        var kind = (buffer.Mode & 0xF000) switch
        {
            0x8000 => UnixFileKind.Regular,
            0x4000 => UnixFileKind.Directory,
            0xA000 => UnixFileKind.SymbolicLink,
            _ => UnixFileKind.Other, // FIFO, socket, character or block device
        };
        return new UnixFileStatus(kind, buffer.Uid, (UnixFileMode)(buffer.Mode & 0xFFF), (long)buffer.Size);
    }
}
