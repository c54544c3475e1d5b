using System.Text;
using Attention.Native.Runtime;

namespace Attention.Native.IO;

/// <summary>
/// File-type and identity checks made before a path is opened: opening a FIFO blocks until a writer comes, and reading a
/// character device such as <c>/dev/urandom</c> never ends, so readers refuse anything but a regular file up front.
/// On Linux the answers come from <c>statx</c>; elsewhere from what .NET exposes (directories and links only).
/// </summary>
internal static class LocalFile
{
    // Linux's NAME_MAX: the longest file name, in bytes, one folder entry may have.
    internal const int MaxNameBytes = 255;

    private static bool s_statxMissing;

    /// <summary>What <paramref name="path"/> is; a symbolic link is followed unless <paramref name="followLinks"/> is false.</summary>
    public static UnixFileKind Kind(string path, bool followLinks)
    {
        if (TryStatx(path, followLinks, out var status, out bool missing))
        {
            return status.Kind;
        }
        if (missing)
        {
            return UnixFileKind.Missing;
        }
        var info = new FileInfo(path);
        if (!followLinks && info.LinkTarget is not null)
        {
            return UnixFileKind.SymbolicLink;
        }
        return Directory.Exists(path) ? UnixFileKind.Directory : File.Exists(path) ? UnixFileKind.Regular : UnixFileKind.Missing;
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
        if (kind == UnixFileKind.Missing)
        {
            throw new FileNotFoundException($"{name}: file not found: {Path.GetFullPath(path)}", path);
        }
        if (kind != UnixFileKind.Regular)
        {
            throw new ArgumentException($"{name}: expected a regular file, actual {Describe(kind)}: {Path.GetFullPath(path)}", name);
        }
    }

    /// <summary>"a FIFO", "a character device", … for messages.</summary>
    public static string Describe(UnixFileKind kind) => kind switch
    {
        UnixFileKind.Missing => "no file",
        UnixFileKind.Regular => "a regular file",
        UnixFileKind.Directory => "a folder",
        UnixFileKind.SymbolicLink => "a symbolic link",
        UnixFileKind.Fifo => "a FIFO (named pipe)",
        UnixFileKind.CharacterDevice => "a character device",
        UnixFileKind.BlockDevice => "a block device",
        UnixFileKind.Socket => "a socket",
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

    private static bool TryStatx(string path, bool followLinks, out UnixFileStatus status, out bool missing)
    {
        status = default;
        missing = false;
        if (!OperatingSystem.IsLinux() || s_statxMissing)
        {
            return false;
        }
        try
        {
            status = UnixFileStatus.Of(path, followLinks);
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            // A libc without statx (glibc before 2.28, musl before 1.2.5): fall back to what .NET exposes.
            s_statxMissing = true;
            return false;
        }
        catch (IOException)
        {
            return false;
        }
        missing = status.Kind == UnixFileKind.Missing;
        return !missing;
    }
}
