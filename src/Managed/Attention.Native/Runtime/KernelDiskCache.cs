using System.Security.Cryptography;
using System.Text;

namespace Attention.Native.Runtime;

/// <summary>
/// Compiled kernels on disk, one file per cache key. A file is: magic "ANKC", format version, payload length,
/// payload, SHA-256 of the payload. A file that fails any check (truncated, corrupted, another key) is
/// deleted and reported as a miss. Writes go to a unique temporary file renamed into place, so concurrent
/// processes never see a partial file.
/// </summary>
internal sealed class KernelDiskCache(string directory)
{
    private const uint Magic = 0x434B4E41; // "ANKC" little-endian
    private const int FormatVersion = 1;

    public string Directory { get; } = directory;

    public string PathFor(string key) => Path.Combine(Directory, key + ".kernel");

    public CompiledProgram? TryRead(string key)
    {
        string path = PathFor(key);
        byte[] bytes;
        try
        {
            if (!File.Exists(path))
            {
                return null;
            }
            bytes = File.ReadAllBytes(path);
        }
        catch (IOException)
        {
            return null;
        }
        catch (UnauthorizedAccessException)
        {
            return null;
        }
        var program = Decode(bytes, key);
        if (program is null)
        {
            TryDelete(path);
        }
        return program;
    }

    public void Write(CompiledProgram program)
    {
        System.IO.Directory.CreateDirectory(Directory);
        string final = PathFor(program.Key);
        string temp = Path.Combine(Directory, $"{program.Key}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp");
        try
        {
            File.WriteAllBytes(temp, Encode(program));
            File.Move(temp, final, overwrite: true);
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
        try
        {
            using var r = new BinaryReader(new MemoryStream(bytes, header, (int)length), Encoding.UTF8);
            string key = r.ReadString();
            if (key != expectedKey)
            {
                return null;
            }
            string target = r.ReadString();
            string log = r.ReadString();
            int count = r.ReadInt32();
            var names = new Dictionary<string, string>(StringComparer.Ordinal);
            for (int i = 0; i < count; i++)
            {
                names[r.ReadString()] = r.ReadString();
            }
            byte[] image = r.ReadBytes(r.ReadInt32());
            return new CompiledProgram(key, target, image, names, log) { Origin = CompileOrigin.DiskCache };
        }
        catch (EndOfStreamException)
        {
            return null;
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
