using System.Globalization;

namespace Attention.Native.Runtime;

/// <summary>
/// Where the kernel cache lives and whether a folder may hold it. A cache entry is code the GPU runs, so on
/// Unix the folder must be private: owned by this user (or root) and writable by nobody else, as ssh demands
/// of <c>~/.ssh</c>; so must each entry.
/// </summary>
internal static class KernelCacheFolder
{
    /// <summary>How the default, per-user folder is created: 0700, as XDG asks.</summary>
    public const UnixFileMode PerUser = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute;

    /// <summary>How a folder the user named is created: 0755, so a cache filled by a deployment step
    /// (<c>attn compile --cache</c>) can be read by the service that runs later as another user.</summary>
    public const UnixFileMode Chosen = PerUser | UnixFileMode.GroupRead | UnixFileMode.GroupExecute | UnixFileMode.OtherRead | UnixFileMode.OtherExecute;

    /// <summary>
    /// The default folder on Unix: <paramref name="explicitDirectory"/> when given, else
    /// <c>$XDG_CACHE_HOME/attention-native/kernels</c> (only an absolute XDG path counts, as the XDG spec says),
    /// else <c>~/.cache/attention-native/kernels</c> when the home is an existing folder other than <c>/</c>,
    /// else <c>&lt;temp&gt;/attention-native-&lt;uid&gt;</c>: a folder of this user's own, never one shared by all.
    /// </summary>
    public static string DefaultFor(string? explicitDirectory, string? xdgCacheHome, string? home, string temp, uint uid)
    {
        if (explicitDirectory is { Length: > 0 })
        {
            return explicitDirectory;
        }
        if (xdgCacheHome is { Length: > 0 } && Path.IsPathRooted(xdgCacheHome))
        {
            return Path.Combine(xdgCacheHome, "attention-native", "kernels");
        }
        // A service account's home is often "/nonexistent" or "/"; caching there fails or needs root.
        if (home is { Length: > 0 } && Path.IsPathRooted(home) && Path.TrimEndingDirectorySeparator(home) != "/" && Directory.Exists(home))
        {
            return Path.Combine(home, ".cache", "attention-native", "kernels");
        }
        return Path.Combine(temp, "attention-native-" + uid.ToString(CultureInfo.InvariantCulture));
    }

    /// <summary>Creates <paramref name="directory"/> (each missing level with <paramref name="createMode"/> on Unix)
    /// and returns null when the cache may use it, else why not.</summary>
    public static string? Prepare(string directory, UnixFileMode createMode)
    {
        try
        {
            if (OperatingSystem.IsWindows())
            {
                Directory.CreateDirectory(directory); // under LocalApplicationData, private by its ACL
                return null;
            }
            // CreateDirectory(path, mode) gives the mode to the last level only; XDG asks 0700 of every level made.
            var missing = new Stack<string>();
            for (string? level = Path.GetFullPath(directory); level is not null && !Path.Exists(level); level = Path.GetDirectoryName(level))
            {
                missing.Push(level);
            }
            while (missing.TryPop(out string? level))
            {
                Directory.CreateDirectory(level, createMode);
            }
        }
        catch (IOException e)
        {
            return $"cannot create the folder: {e.Message}";
        }
        catch (UnauthorizedAccessException e)
        {
            return $"cannot create the folder: {e.Message}";
        }
        return Check(directory);
    }

    /// <summary>Null when the existing <paramref name="directory"/> is private to this user, else why not (Unix only).</summary>
    public static string? Check(string directory)
    {
        try
        {
            uint me = UnixFileStatus.EffectiveUserId;
            // Whoever owns a link can point it elsewhere after the check.
            var link = UnixFileStatus.Of(directory, followLinks: false);
            if (link.Kind == UnixFileKind.SymbolicLink && !Trusted(link.Owner, me))
            {
                return $"the folder is a symbolic link owned by uid {link.Owner}; expected uid {me} or root";
            }
            var folder = UnixFileStatus.Of(directory, followLinks: true);
            if (folder.Kind != UnixFileKind.Directory)
            {
                return $"expected a folder, found {folder.Kind}";
            }
            if (!Trusted(folder.Owner, me))
            {
                return $"the folder is owned by uid {folder.Owner}; expected uid {me} or root";
            }
            if ((folder.Mode & (UnixFileMode.GroupWrite | UnixFileMode.OtherWrite)) != 0)
            {
                return $"the folder is writable by others (mode {Octal(folder.Mode)}); expected no group or other write, e.g. 0700";
            }
            return null;
        }
        catch (IOException e)
        {
            return $"cannot read the folder's owner and mode: {e.Message}";
        }
        catch (EntryPointNotFoundException)
        {
            return "cannot read the folder's owner: the C library has no statx";
        }
    }

    /// <summary>True when someone other than this user and root could change <paramref name="file"/>.</summary>
    public static bool OthersCanChange(UnixFileStatus file) =>
        !Trusted(file.Owner, UnixFileStatus.EffectiveUserId) || (file.Mode & (UnixFileMode.GroupWrite | UnixFileMode.OtherWrite)) != 0;

    private static bool Trusted(uint owner, uint me) => owner == me || owner == 0;

    private static string Octal(UnixFileMode mode) => "0" + Convert.ToString((int)mode, 8);
}
