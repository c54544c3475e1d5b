using System.Runtime.InteropServices;
using System.Text;

namespace Attention.Native.IO;

/// <summary>What a path names, as <c>stat</c> reports it.</summary>
internal enum FileKind
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

/// <summary>
/// File-type and identity checks made before a path is opened: opening a FIFO blocks until a writer comes, and reading a
/// character device such as <c>/dev/urandom</c> never ends, so readers refuse anything but a regular file up front.
/// On Linux the answers come from <c>statx</c>; elsewhere from what .NET exposes (directories and links only).
/// </summary>
internal static unsafe partial class LocalFile
{
    // Linux's NAME_MAX: the longest file name, in bytes, one folder entry may have.
    internal const int MaxNameBytes = 255;

    private const int AtFdCwd = -100;
    private const int AtSymlinkNoFollow = 0x100;
    private const uint StatxType = 0x1;
    private const uint StatxIno = 0x100;
    private const int StatxSize = 256;
    private const int ENOENT = 2;
    private const int ENOTDIR = 20;
    private const int ENAMETOOLONG = 36;

    private static bool s_statxMissing;

    /// <summary>What <paramref name="path"/> is; a symbolic link is followed unless <paramref name="followLinks"/> is false.</summary>
    public static FileKind Kind(string path, bool followLinks)
    {
        if (TryStatx(path, followLinks, out var status, out bool missing))
        {
            return status.Kind;
        }
        if (missing)
        {
            return FileKind.Missing;
        }
        var info = new FileInfo(path);
        if (!followLinks && info.LinkTarget is not null)
        {
            return FileKind.SymbolicLink;
        }
        return Directory.Exists(path) ? FileKind.Directory : File.Exists(path) ? FileKind.Regular : FileKind.Missing;
    }

    /// <summary>True when <paramref name="a"/> and <paramref name="b"/> are one file: same device and inode, else the same resolved full path.</summary>
    public static bool SameFile(string a, string b)
    {
        if (TryStatx(a, followLinks: true, out var sa, out _) && TryStatx(b, followLinks: true, out var sb, out _))
        {
            return sa.Device == sb.Device && sa.Inode == sb.Inode;
        }
        return string.Equals(Resolve(a), Resolve(b), OperatingSystem.IsLinux() ? StringComparison.Ordinal : StringComparison.OrdinalIgnoreCase);
    }

    /// <summary>
    /// Throws unless <paramref name="path"/> is (or links to) a regular file: <see cref="FileNotFoundException"/> when it does not
    /// exist, <see cref="ArgumentException"/> naming <paramref name="name"/> when it is a FIFO, device, folder or socket.
    /// </summary>
    public static void RequireRegular(string path, string name)
    {
        var kind = Kind(path, followLinks: true);
        if (kind == FileKind.Missing)
        {
            throw new FileNotFoundException($"{name}: file not found: {Path.GetFullPath(path)}", path);
        }
        if (kind != FileKind.Regular)
        {
            throw new ArgumentException($"{name}: expected a regular file, actual {Describe(kind)}: {Path.GetFullPath(path)}", name);
        }
    }

    /// <summary>"a FIFO", "a character device", … for messages.</summary>
    public static string Describe(FileKind kind) => kind switch
    {
        FileKind.Missing => "no file",
        FileKind.Regular => "a regular file",
        FileKind.Directory => "a folder",
        FileKind.SymbolicLink => "a symbolic link",
        FileKind.Fifo => "a FIFO (named pipe)",
        FileKind.CharacterDevice => "a character device",
        FileKind.BlockDevice => "a block device",
        FileKind.Socket => "a socket",
        _ => "not a regular file",
    };

    /// <summary>
    /// A hidden temporary name for <paramref name="fileName"/> in the same folder, unique and at most
    /// <see cref="MaxNameBytes"/> UTF-8 bytes: a long target name is shortened (at a character boundary) rather than made too long to create.
    /// </summary>
    public static string TemporaryName(string fileName)
    {
        string suffix = $".{Guid.NewGuid():N}.tmp";
        int budget = MaxNameBytes - 1 - suffix.Length;
        var kept = new StringBuilder();
        int bytes = 0;
        foreach (var rune in fileName.EnumerateRunes())
        {
            bytes += rune.Utf8SequenceLength;
            if (bytes > budget)
            {
                break;
            }
            kept.Append(rune.ToString());
        }
        return $".{kept}{suffix}";
    }

    private static string Resolve(string path)
    {
        string full = Path.GetFullPath(path);
        try
        {
            return File.ResolveLinkTarget(full, returnFinalTarget: true)?.FullName ?? full;
        }
        catch (IOException)
        {
            return full;
        }
    }

    private readonly record struct Status(FileKind Kind, ulong Device, ulong Inode);

    private static bool TryStatx(string path, bool followLinks, out Status status, out bool missing)
    {
        status = default;
        missing = false;
        if (!OperatingSystem.IsLinux() || s_statxMissing)
        {
            return false;
        }
        var buffer = stackalloc byte[StatxSize];
        int result;
        try
        {
            result = Statx(AtFdCwd, path, followLinks ? 0 : AtSymlinkNoFollow, StatxType | StatxIno, buffer);
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            // A libc without statx (glibc before 2.28, musl before 1.2.5): fall back to what .NET exposes.
            s_statxMissing = true;
            return false;
        }
        if (result != 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            // A name too long for the file system cannot exist either.
            missing = errno is ENOENT or ENOTDIR or ENAMETOOLONG;
            return false;
        }
        // struct statx: stx_mode (u16) at byte 28, stx_ino (u64) at 32, stx_dev_major and stx_dev_minor (u32) at 136 and 140.
        int mode = *(ushort*)(buffer + 28) & 0xF000;
        var kind = mode switch
        {
            0x8000 => FileKind.Regular,
            0x4000 => FileKind.Directory,
            0xA000 => FileKind.SymbolicLink,
            0x1000 => FileKind.Fifo,
            0x2000 => FileKind.CharacterDevice,
            0x6000 => FileKind.BlockDevice,
            0xC000 => FileKind.Socket,
            _ => FileKind.Other,
        };
        ulong device = ((ulong)*(uint*)(buffer + 136) << 32) | *(uint*)(buffer + 140);
        status = new Status(kind, device, *(ulong*)(buffer + 32));
        return true;
    }

    [LibraryImport("libc", EntryPoint = "statx", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int Statx(int dirfd, string path, int flags, uint mask, byte* buffer);
}
