using System.Runtime.InteropServices;
using Attention.Native.Interop;
using static Attention.Native.Interop.NativeMethods;

namespace Attention.Native.Runtime;

/// <summary>What a path names: the kinds the kernel cache and the file readers tell apart.</summary>
internal enum UnixFileKind
{
    Missing,
    Regular,
    Directory,
    SymbolicLink,
    Fifo,
    CharacterDevice,
    BlockDevice,
    Socket,
    Other,
}

/// <summary>What <c>statx</c> says about a path: its kind, owner, permission bits, size and identity (device, inode).</summary>
internal readonly record struct UnixFileStatus(UnixFileKind Kind, uint Owner, UnixFileMode Mode, long Size, ulong Device = 0, ulong Inode = 0)
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
            result = statx(AT_FDCWD, (byte*)name, followLinks ? 0 : AT_SYMLINK_NOFOLLOW, STATX_TYPE | STATX_MODE | STATX_UID | STATX_SIZE | STATX_INO, &buffer);
        }
        finally
        {
            Marshal.FreeCoTaskMem(name);
        }
        if (result != 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            // A name too long for the file system cannot exist either.
            return errno is ENOENT or ENOTDIR or ENAMETOOLONG
                ? new UnixFileStatus(UnixFileKind.Missing, 0, 0, 0)
                : throw new IOException($"statx({path}) failed: {Marshal.GetPInvokeErrorMessage(errno)} (errno {errno})");
        }
        var kind = (buffer.Mode & 0xF000) switch
        {
            0x8000 => UnixFileKind.Regular,
            0x4000 => UnixFileKind.Directory,
            0xA000 => UnixFileKind.SymbolicLink,
            0x1000 => UnixFileKind.Fifo,
            0x2000 => UnixFileKind.CharacterDevice,
            0x6000 => UnixFileKind.BlockDevice,
            0xC000 => UnixFileKind.Socket,
            _ => UnixFileKind.Other,
        };
        ulong device = ((ulong)buffer.DevMajor << 32) | buffer.DevMinor;
        return new UnixFileStatus(kind, buffer.Uid, (UnixFileMode)(buffer.Mode & 0xFFF), (long)buffer.Size, device, buffer.Inode);
    }
}
