using Microsoft.Win32.SafeHandles;
using System.Buffers.Binary;
using System.Text;
using Attention.Native.Runtime;

namespace Attention.Native.IO;

/// <summary>
/// Reads and writes the safetensors format (https://github.com/huggingface/safetensors): an 8-byte
/// little-endian header length N, N bytes of UTF-8 JSON mapping each tensor name to its dtype, shape and
/// byte range, then the little-endian row-major tensor data. Supports the F32, F16, BF16 and F64 dtypes.
/// </summary>
/// <remarks>
/// Reading validates the whole header before allocating any tensor; every fault in a file becomes an
/// <see cref="InvalidDataException"/> that names the source and says what is wrong. Byte ranges may leave
/// gaps (the format's reference reader refuses them; this one only refuses overlaps). Writing lays the
/// tensors out back to back after a header padded with spaces to 8-byte alignment.
/// <para>Thread safety: stateless; reads and writes of different files may run on many threads at once.</para>
///  Stream rules: <c>Read</c> onto a CUDA backend returns when every tensor is uploaded; <c>Write</c> and <c>Serialize</c> read the tensors back, which waits for the work queued before on their backend.</remarks>
public static class SafeTensors
{
    private static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    /// <summary>Reads every tensor of the file at <paramref name="path"/> onto <paramref name="backend"/>, keeping each file dtype.</summary>
    /// <param name="path">The safetensors file.</param>
    /// <param name="backend">Where the tensors go; <see cref="Backend.Cpu"/> when null.</param>
    /// <returns>The tensors and metadata; dispose it to free the tensors.</returns>
    /// <exception cref="InvalidDataException">The file is not a valid safetensors file; the message names the path and the fault.</exception>
    /// <exception cref="NotSupportedException">The backend cannot hold a tensor of the file (e.g. F64 on CUDA, or a tensor too large for host memory).</exception>
    /// <exception cref="FileNotFoundException">Nothing exists at <paramref name="path"/>.</exception>
    /// <exception cref="ArgumentException"><paramref name="path"/> is not (a link to) a regular file, e.g. a FIFO, which would block the read forever.</exception>
    public static SafeTensorsContent Read(string path, Backend? backend = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        backend ??= Backend.Cpu;
        // Before opening: opening a FIFO blocks until a writer appears.
        LocalFile.RequireRegular(path, nameof(path));
        using var file = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read, FileOptions.RandomAccess);
        var header = ReadHeader(file, path, out long dataStart);
        return Load(header, backend, path, (entry, tensor) =>
        {
            long at = dataStart + entry.Begin;
            if (tensor is HostTensor host)
            {
                // Straight into the tensor's storage: no second copy of a large weight.
                ReadExactly(file, host.Bytes, at, path);
            }
            else
            {
                var staging = new byte[entry.ByteCount];
                ReadExactly(file, staging, at, path);
                tensor.CopyFromBytes(staging);
            }
        });
    }

    /// <summary>Reads every tensor of a safetensors file held in memory onto <paramref name="backend"/>, keeping each file dtype.</summary>
    /// <param name="file">The whole file.</param>
    /// <param name="backend">Where the tensors go; <see cref="Backend.Cpu"/> when null.</param>
    /// <param name="source">What error messages call the file.</param>
    /// <returns>The tensors and metadata; dispose it to free the tensors.</returns>
    /// <exception cref="InvalidDataException">The bytes are not a valid safetensors file; the message names <paramref name="source"/> and the fault.</exception>
    /// <exception cref="NotSupportedException">The backend cannot hold a tensor of the file (e.g. F64 on CUDA).</exception>
    public static SafeTensorsContent Read(ReadOnlySpan<byte> file, Backend? backend = null, string source = "<memory>")
    {
        ArgumentNullException.ThrowIfNull(source);
        backend ??= Backend.Cpu;
        SafeTensorsHeader.CheckFileLength(file.Length, source);
        int headerLength = SafeTensorsHeader.ReadHeaderLength(file[..SafeTensorsHeader.PrefixBytes], file.Length, source);
        int dataStart = SafeTensorsHeader.PrefixBytes + headerLength;
        var header = SafeTensorsHeader.Parse(file[SafeTensorsHeader.PrefixBytes..dataStart].ToArray(), file.Length - dataStart, source);
        var data = file[dataStart..];
        var tensors = Allocate(header, backend, source);
        try
        {
            // A span cannot be captured by Load's callback, so the copy loop is written out here.
            for (int i = 0; i < header.Entries.Count; i++)
            {
                var entry = header.Entries[i];
                tensors.GetAt(i).Value.CopyFromBytes(data.Slice((int)entry.Begin, (int)entry.ByteCount));
            }
            return new SafeTensorsContent(source, tensors, header.Metadata);
        }
        catch
        {
            DisposeAll(tensors);
            throw;
        }
    }

    /// <summary>
    /// Writes <paramref name="tensors"/> (from any backend; their bytes are copied out) to <paramref name="path"/>
    /// in the given order, with optional metadata. Atomic: the file is written under a temporary name in the
    /// same folder and then renamed over <paramref name="path"/>, so a failure leaves neither a partial file nor
    /// a changed one.
    /// </summary>
    /// <param name="path">The file to create or replace.</param>
    /// <param name="tensors">Name and tensor pairs; names must be non-empty, unique and not <c>__metadata__</c>. Each tensor is stored in its own dtype.</param>
    /// <param name="metadata">String pairs stored under <c>__metadata__</c>; omitted when null or empty.</param>
    /// <exception cref="ArgumentException">A name is empty, repeated or reserved, a tensor is null or disposed, a metadata value is null, or
    /// <paramref name="path"/> exists and is not a regular file (a FIFO, device, folder or symbolic link would be replaced by the rename).</exception>
    public static void Write(string path, IEnumerable<KeyValuePair<string, Tensor>> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        var list = CheckTensors(tensors);
        CheckMetadata(metadata);
        var header = SafeTensorsHeader.Format(list, metadata);
        string target = Path.GetFullPath(path);
        string folder = Path.GetDirectoryName(target) ?? throw new ArgumentException($"path: expected a file path, actual the root '{path}'", nameof(path));
        var existing = LocalFile.Kind(target, followLinks: false);
        if (existing is not (UnixFileKind.Missing or UnixFileKind.Regular))
        {
            throw new ArgumentException($"path: expected a regular file to replace or a new name, actual {LocalFile.Describe(existing)}: {target}", nameof(path));
        }
        // Same folder as the target, so the final rename stays on one file system and is atomic.
        string temporary = Path.Combine(folder, LocalFile.TemporaryName(Path.GetFileName(target)));
        try
        {
            using (var stream = new FileStream(temporary, FileMode.CreateNew, FileAccess.Write, FileShare.None, bufferSize: 1 << 20))
            {
                Span<byte> prefix = stackalloc byte[SafeTensorsHeader.PrefixBytes];
                BinaryPrimitives.WriteUInt64LittleEndian(prefix, (ulong)header.Length);
                stream.Write(prefix);
                stream.Write(header);
                foreach (var (_, tensor) in list)
                {
                    if (tensor is HostTensor { IsContiguous: true } host)
                    {
                        stream.Write(host.RawBytes);
                    }
                    else
                    {
                        var staging = new byte[tensor.ByteCount];
                        tensor.CopyToBytes(staging);
                        stream.Write(staging);
                    }
                }
                // On disk before the rename, so a crash cannot leave the new name pointing at missing data.
                stream.Flush(flushToDisk: true);
            }
            File.Move(temporary, target, overwrite: true);
        }
        catch
        {
            TryDelete(temporary);
            throw;
        }
    }

    /// <summary>The safetensors file for <paramref name="tensors"/> (in the given order) and optional metadata, as bytes.</summary>
    /// <param name="tensors">Name and tensor pairs; names must be non-empty, unique and not <c>__metadata__</c>. Each tensor is stored in its own dtype.</param>
    /// <param name="metadata">String pairs stored under <c>__metadata__</c>; omitted when null or empty.</param>
    /// <returns>The whole file.</returns>
    /// <exception cref="ArgumentException">As for <see cref="Write"/>, or the file would exceed the largest byte array.</exception>
    public static byte[] Serialize(IEnumerable<KeyValuePair<string, Tensor>> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var list = CheckTensors(tensors);
        CheckMetadata(metadata);
        var header = SafeTensorsHeader.Format(list, metadata);
        long total = SafeTensorsHeader.PrefixBytes + header.Length + list.Sum(pair => pair.Value.ByteCount);
        if (total > Array.MaxLength)
        {
            throw new ArgumentException($"tensors: expected at most {Array.MaxLength} bytes in all to serialize into an array, actual {total}; use Write", nameof(tensors));
        }
        var file = new byte[total];
        BinaryPrimitives.WriteUInt64LittleEndian(file, (ulong)header.Length);
        header.CopyTo(file, SafeTensorsHeader.PrefixBytes);
        int offset = SafeTensorsHeader.PrefixBytes + header.Length;
        foreach (var (_, tensor) in list)
        {
            int length = (int)tensor.ByteCount;
            tensor.CopyToBytes(file.AsSpan(offset, length));
            offset += length;
        }
        return file;
    }

    /// <summary>
    /// The validated header of the file at <paramref name="path"/> (names, dtypes, shapes) without reading tensor data: what a
    /// caller needs to size a run before committing memory to it.
    /// </summary>
    internal static SafeTensorsHeader ReadHeader(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        LocalFile.RequireRegular(path, nameof(path));
        using var file = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read, FileOptions.RandomAccess);
        return ReadHeader(file, path, out _);
    }

    private static SafeTensorsHeader ReadHeader(SafeFileHandle file, string path, out long dataStart)
    {
        long fileLength = RandomAccess.GetLength(file);
        SafeTensorsHeader.CheckFileLength(fileLength, path);
        Span<byte> prefix = stackalloc byte[SafeTensorsHeader.PrefixBytes];
        ReadExactly(file, prefix, 0, path);
        int headerLength = SafeTensorsHeader.ReadHeaderLength(prefix, fileLength, path);
        var json = new byte[headerLength];
        ReadExactly(file, json, SafeTensorsHeader.PrefixBytes, path);
        dataStart = SafeTensorsHeader.PrefixBytes + headerLength;
        return SafeTensorsHeader.Parse(json, fileLength - dataStart, path);
    }

    private static SafeTensorsContent Load(SafeTensorsHeader header, Backend backend, string source, Action<SafeTensorsEntry, Tensor> fill)
    {
        var tensors = Allocate(header, backend, source);
        try
        {
            for (int i = 0; i < header.Entries.Count; i++)
            {
                fill(header.Entries[i], tensors.GetAt(i).Value);
            }
            return new SafeTensorsContent(source, tensors, header.Metadata);
        }
        catch
        {
            DisposeAll(tensors);
            throw;
        }
    }

    /// <summary>One tensor per entry, in header order; all or nothing.</summary>
    private static OrderedDictionary<string, Tensor> Allocate(SafeTensorsHeader header, Backend backend, string source)
    {
        // Checked for every entry first, so an unsupported dtype late in the file costs no allocation.
        foreach (var entry in header.Entries)
        {
            if (!backend.Supports(entry.DType))
            {
                throw new NotSupportedException($"{source}: tensor {SafeTensorsHeader.Quote(entry.Name)} is {entry.DType}, which the {backend.Kind} backend ({backend.Name}) does not support; read the file onto Backend.Cpu and convert");
            }
        }
        var tensors = new OrderedDictionary<string, Tensor>(header.Entries.Count, StringComparer.Ordinal);
        try
        {
            foreach (var entry in header.Entries)
            {
                Tensor tensor;
                try
                {
                    tensor = backend.Empty(entry.Shape, entry.DType);
                }
                catch (ArgumentException e)
                {
                    // The file is valid but the backend cannot hold this tensor (e.g. over 2 GiB in host memory).
                    throw new NotSupportedException($"{source}: tensor {SafeTensorsHeader.Quote(entry.Name)} ({entry.DType} {entry.Shape}) cannot be allocated on {backend.Name}: {e.Message}", e);
                }
                tensors.Add(entry.Name, tensor);
            }
            return tensors;
        }
        catch
        {
            DisposeAll(tensors);
            throw;
        }
    }

    private static void DisposeAll(OrderedDictionary<string, Tensor> tensors)
    {
        foreach (var tensor in tensors.Values)
        {
            tensor.Dispose();
        }
    }

    private static void ReadExactly(SafeFileHandle file, Span<byte> destination, long offset, string source)
    {
        while (!destination.IsEmpty)
        {
            int read = RandomAccess.Read(file, destination, offset);
            if (read == 0)
            {
                // Only possible if the file shrank after its length was checked.
                throw SafeTensorsHeader.Invalid(source, $"the file ended at byte {offset}, before the data its header describes (was it changed while being read?)");
            }
            destination = destination[read..];
            offset += read;
        }
    }

    private static List<KeyValuePair<string, Tensor>> CheckTensors(IEnumerable<KeyValuePair<string, Tensor>> tensors)
    {
        ArgumentNullException.ThrowIfNull(tensors);
        var list = tensors.ToList();
        var positions = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; i < list.Count; i++)
        {
            var (name, tensor) = list[i];
            if (string.IsNullOrEmpty(name))
            {
                throw new ArgumentException($"tensors: expected a non-empty name, actual {(name is null ? "null" : "an empty name")} at position {i}", nameof(tensors));
            }
            if (name == SafeTensorsHeader.MetadataKey)
            {
                throw new ArgumentException($"tensors: expected a name other than the reserved '{SafeTensorsHeader.MetadataKey}', actual '{name}' at position {i}", nameof(tensors));
            }
            if (!IsValidUnicode(name))
            {
                throw new ArgumentException($"tensors: expected a name of valid UTF-16, actual a name with an unpaired surrogate at position {i}", nameof(tensors));
            }
            if (!positions.TryAdd(name, i))
            {
                throw new ArgumentException($"tensors: expected unique names, actual {SafeTensorsHeader.Quote(name)} at positions {positions[name]} and {i}", nameof(tensors));
            }
            if (tensor is null)
            {
                throw new ArgumentException($"tensors: expected a tensor for {SafeTensorsHeader.Quote(name)}, actual null", nameof(tensors));
            }
            if (tensor.IsDisposed)
            {
                throw new ArgumentException($"tensors: expected a live tensor for {SafeTensorsHeader.Quote(name)}, actual a disposed one", nameof(tensors));
            }
        }
        return list;
    }

    private static void CheckMetadata(IReadOnlyDictionary<string, string>? metadata)
    {
        if (metadata is null)
        {
            return;
        }
        foreach (var (key, value) in metadata)
        {
            if (key is null || !IsValidUnicode(key))
            {
                throw new ArgumentException($"metadata: expected keys of valid UTF-16, actual {(key is null ? "a null key" : "a key with an unpaired surrogate")}", nameof(metadata));
            }
            if (value is null)
            {
                throw new ArgumentException($"metadata: expected a string value for {SafeTensorsHeader.Quote(key)}, actual null", nameof(metadata));
            }
            if (!IsValidUnicode(value))
            {
                throw new ArgumentException($"metadata: expected a value of valid UTF-16 for {SafeTensorsHeader.Quote(key)}, actual one with an unpaired surrogate", nameof(metadata));
            }
        }
    }

    private static bool IsValidUnicode(string text)
    {
        try
        {
            StrictUtf8.GetByteCount(text);
            return true;
        }
        catch (EncoderFallbackException)
        {
            return false;
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
            // Best effort: the original failure is the one worth reporting.
        }
        catch (UnauthorizedAccessException)
        {
        }
    }
}
