using System.Security.Cryptography;
using System.Text;

namespace Attention.Native.Runtime;

/// <summary>
/// Compiled kernels on disk, one file per cache key. A file is: magic "ANKC", format version, payload length,
/// payload, SHA-256 of the payload. A file that fails any check (not a regular file, over
/// <see cref="MaxEntryBytes"/>, changeable by another user, truncated, corrupted, a length field that disagrees with the body, another key)
/// is deleted and reported as a miss. Writes go to a unique temporary file renamed into place, so concurrent
/// processes never see a partial file. The folder is checked once (<see cref="KernelCacheFolder.Prepare"/>):
/// when it is refused or an entry cannot be written, <see cref="Warning"/> says why and the warning is traced
/// once; a refused folder is never read.
/// </summary>
internal sealed class KernelDiskCache
{
    /// <summary>No entry is larger: every kernel file's image is a few MiB at most.</summary>
    public const long MaxEntryBytes = 64L << 20;

    private const uint Magic = 0x434B4E41; // "ANKC" little-endian
    private const int FormatVersion = 1;

    private readonly Lazy<string?> _refusal;
    private string? _warning;

    /// <summary>A cache in <paramref name="directory"/>, creating missing folders with <paramref name="createMode"/> on Unix.</summary>
    public KernelDiskCache(string directory, UnixFileMode createMode = KernelCacheFolder.PerUser)
    {
        Directory = directory;
        _refusal = new Lazy<string?>(() => KernelCacheFolder.Prepare(directory, createMode));
    }

    public string Directory { get; }

    /// <summary>The first problem met (why the folder is not used, or why an entry could not be written), or null.</summary>
    public string? Warning => Volatile.Read(ref _warning);

    public string PathFor(string key) => Path.Combine(Directory, key + ".kernel");

    public CompiledProgram? TryRead(string key)
    {
        if (!Usable())
        {
            return null;
        }
        string path = PathFor(key);
        byte[]? bytes;
        try
        {
            bytes = ReadEntry(path);
        }
        catch (IOException)
        {
            return null;
        }
        catch (UnauthorizedAccessException)
        {
            return null;
        }
        if (bytes is null)
        {
            return null;
        }
        var program = Decode(bytes, key);
        if (program is null)
        {
            TryDelete(path); // recompiling writes a good entry in its place
        }
        return program;
    }

    /// <summary>Writes <paramref name="program"/>'s entry; false (after one warning) when the cache cannot take it.</summary>
    public bool TryWrite(CompiledProgram program)
    {
        if (!Usable())
        {
            return false;
        }
        string final = PathFor(program.Key);
        string temp = Path.Combine(Directory, $"{program.Key}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp");
        try
        {
            var options = new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write };
            if (!OperatingSystem.IsWindows())
            {
                // 0644 whatever the umask: readable by a service that runs as another user, changed by nobody else.
                options.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.OtherRead;
            }
            using (var stream = new FileStream(temp, options))
            {
                stream.Write(Encode(program));
            }
            File.Move(temp, final, overwrite: true);
            return true;
        }
        catch (IOException e)
        {
            Warn($"entries cannot be written, so every process compiles its kernels again: {e.Message}");
            return false;
        }
        catch (UnauthorizedAccessException e)
        {
            Warn($"entries cannot be written, so every process compiles its kernels again: {e.Message}");
            return false;
        }
        finally
        {
            TryDelete(temp);
        }
    }

    internal static byte[] Encode(CompiledProgram program)
    {
        using var payload = new MemoryStream();
        using (var w = new BinaryWriter(payload, Encoding.UTF8, leaveOpen: true))
        {
            w.Write(program.Key);
            w.Write(program.Target);
            w.Write(program.Log);
            w.Write(program.LoweredNames.Count);
            foreach (var (expression, lowered) in program.LoweredNames.OrderBy(p => p.Key, StringComparer.Ordinal))
            {
                w.Write(expression);
                w.Write(lowered);
            }
            w.Write(program.Image.Length);
            w.Write(program.Image);
        }
        byte[] body = payload.ToArray();
        using var file = new MemoryStream();
        using (var w = new BinaryWriter(file))
        {
            w.Write(Magic);
            w.Write(FormatVersion);
            w.Write((long)body.Length);
            w.Write(body);
            w.Write(SHA256.HashData(body));
        }
        return file.ToArray();
    }

    internal static CompiledProgram? Decode(byte[] bytes, string expectedKey)
    {
        const int header = 4 + 4 + 8;
        const int hash = 32;
        if (bytes.Length < header + hash
            || BitConverter.ToUInt32(bytes, 0) != Magic
            || BitConverter.ToInt32(bytes, 4) != FormatVersion)
        {
            return null;
        }
        long length = BitConverter.ToInt64(bytes, 8);
        if (length != bytes.Length - header - hash)
        {
            return null;
        }
        var body = bytes.AsSpan(header, (int)length);
        if (!SHA256.HashData(body).AsSpan().SequenceEqual(bytes.AsSpan(header + (int)length, hash)))
        {
            return null;
        }
        // The checksum only catches accidents: every length inside the body is checked against what remains.
        try
        {
            using var stream = new MemoryStream(bytes, header, (int)length, writable: false);
            using var r = new BinaryReader(stream, Encoding.UTF8);
            long Remaining() => stream.Length - stream.Position;
            string key = r.ReadString();
            if (key != expectedKey)
            {
                return null;
            }
            string target = r.ReadString();
            string log = r.ReadString();
            int count = r.ReadInt32();
            if (count < 0 || count > Remaining() / 2) // a name pair takes two bytes at least
            {
                return null;
            }
            var names = new Dictionary<string, string>(StringComparer.Ordinal);
            for (int i = 0; i < count; i++)
            {
                names[r.ReadString()] = r.ReadString();
            }
            int imageLength = r.ReadInt32();
            if (imageLength <= 0 || imageLength != Remaining()) // the image is never empty and ends the body
            {
                return null;
            }
            byte[] image = r.ReadBytes(imageLength);
            return new CompiledProgram(key, target, image, names, log) { Origin = CompileOrigin.DiskCache };
        }
        catch (IOException)
        {
            return null; // a string length past the end (EndOfStreamException) or negative
        }
        catch (FormatException)
        {
            return null; // a malformed 7-bit string length
        }
    }

    // The entry's bytes (none when it is no regular file or too large, so it is deleted as bad), or null when
    // there is no entry. The kind is checked before opening: opening a FIFO blocks, a link to /dev/zero never ends.
    private static byte[]? ReadEntry(string path)
    {
        if (OperatingSystem.IsWindows())
        {
            var info = new FileInfo(path);
            if (!info.Exists)
            {
                return System.IO.Directory.Exists(path) ? [] : null;
            }
            if (info.Attributes.HasFlag(FileAttributes.ReparsePoint) || info.Length > MaxEntryBytes)
            {
                return [];
            }
        }
        else
        {
            var status = UnixFileStatus.Of(path, followLinks: false);
            if (status.Kind == UnixFileKind.Missing)
            {
                return null;
            }
            if (status.Kind != UnixFileKind.Regular || status.Size > MaxEntryBytes || KernelCacheFolder.OthersCanChange(status))
            {
                return [];
            }
        }
        using var handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read | FileShare.Delete);
        long length = RandomAccess.GetLength(handle);
        if (length > MaxEntryBytes)
        {
            return [];
        }
        var bytes = new byte[length];
        int total = 0;
        int read;
        while (total < bytes.Length && (read = RandomAccess.Read(handle, bytes.AsSpan(total), total)) > 0)
        {
            total += read;
        }
        return bytes[..total];
    }

    private bool Usable()
    {
        if (_refusal.Value is { } reason)
        {
            Warn($"not used, so kernels are compiled in memory only: {reason}");
            return false;
        }
        return true;
    }

    // One warning per cache: a refused or unwritable folder would otherwise repeat it for every kernel.
    private void Warn(string reason)
    {
        if (Interlocked.CompareExchange(ref _warning, $"kernel cache {Directory}: {reason}", null) is null)
        {
            AttentionNativeEventSource.Log.KernelCacheUnavailable(Directory, reason);
        }
    }

    private static void TryDelete(string path)
    {
        try
        {
            File.Delete(path);
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
    }
}
