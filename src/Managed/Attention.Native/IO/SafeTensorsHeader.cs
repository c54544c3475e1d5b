using System.Buffers;
using System.Buffers.Binary;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Unicode;

namespace Attention.Native.IO;

/// <summary>One tensor described by a safetensors header; offsets are relative to the data section.</summary>
internal sealed record SafeTensorsEntry(string Name, DType DType, Shape Shape, long Begin, long End)
{
    public long ByteCount => End - Begin;
}

/// <summary>
/// Parses and validates a safetensors header, and formats one. Every problem found in a file becomes an
/// <see cref="InvalidDataException"/> naming the source and the fault; nothing is allocated from a header
/// value before that value has been checked against the real length of the file.
/// </summary>
internal sealed class SafeTensorsHeader
{
    /// <summary>Bytes of the little-endian u64 header length that opens the file.</summary>
    internal const int PrefixBytes = 8;

    /// <summary>The limit the reference implementation puts on the header, which keeps a corrupt length from driving a huge allocation.</summary>
    internal const long MaxHeaderBytes = 100_000_000;

    /// <summary>The reserved header key holding string → string metadata.</summary>
    internal const string MetadataKey = "__metadata__";

    private const string SupportedList = "F32, F16, BF16, F64";

    // Valid in the format but with no DType here: named separately so the error says "unsupported", not "unknown".
    private static readonly HashSet<string> OtherFormatDTypes = new(StringComparer.Ordinal)
    {
        "BOOL", "U8", "I8", "U16", "I16", "U32", "I32", "U64", "I64",
        "F8_E5M2", "F8_E4M3", "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4", "C64",
    };

    private SafeTensorsHeader(List<SafeTensorsEntry> entries, OrderedDictionary<string, string> metadata)
    {
        Entries = entries;
        Metadata = metadata;
    }

    /// <summary>The tensors in header order.</summary>
    public IReadOnlyList<SafeTensorsEntry> Entries { get; }

    /// <summary>The <c>__metadata__</c> pairs in header order (empty when absent).</summary>
    public OrderedDictionary<string, string> Metadata { get; }

    /// <summary>Throws unless the file can hold the length prefix.</summary>
    internal static void CheckFileLength(long fileLength, string source)
    {
        if (fileLength < PrefixBytes)
        {
            throw Invalid(source, $"the file is {fileLength} bytes long, shorter than the {PrefixBytes}-byte header length that must open it");
        }
    }

    /// <summary>The header length from the prefix, checked against the limit and the file length.</summary>
    internal static int ReadHeaderLength(ReadOnlySpan<byte> prefix, long fileLength, string source)
    {
        ulong length = BinaryPrimitives.ReadUInt64LittleEndian(prefix);
        if (length > MaxHeaderBytes)
        {
            throw Invalid(source, $"the header length is {length} bytes, over the {MaxHeaderBytes}-byte limit (corrupt or not a safetensors file)");
        }
        long available = fileLength - PrefixBytes;
        if (length > (ulong)available)
        {
            throw Invalid(source, $"the header length is {length} bytes, larger than the {available} bytes that follow the length prefix (truncated or corrupt file)");
        }
        return (int)length;
    }

    /// <summary>Parses and validates the JSON header against a data section of <paramref name="dataLength"/> bytes.</summary>
    internal static SafeTensorsHeader Parse(ReadOnlyMemory<byte> json, long dataLength, string source)
    {
        if (!Utf8.IsValid(json.Span))
        {
            throw Invalid(source, "the header is not valid UTF-8");
        }
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(json);
        }
        catch (JsonException e)
        {
            throw Invalid(source, $"the header is not valid JSON: {e.Message}", e);
        }
        using (document)
        {
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
            {
                throw Invalid(source, $"the header is {Describe(root)}, expected a JSON object mapping tensor names to entries");
            }
            var entries = new List<SafeTensorsEntry>();
            var metadata = new OrderedDictionary<string, string>(StringComparer.Ordinal);
            bool sawMetadata = false;
            // JsonDocument keeps repeated keys; a repeated tensor name would make the file ambiguous.
            var names = new HashSet<string>(StringComparer.Ordinal);
            foreach (var property in root.EnumerateObject())
            {
                string name = NameOf(property, "a key of the header", source);
                if (name == MetadataKey)
                {
                    if (sawMetadata)
                    {
                        throw Invalid(source, $"duplicate key '{MetadataKey}' in the header");
                    }
                    sawMetadata = true;
                    ParseMetadata(property.Value, metadata, source);
                    continue;
                }
                if (!names.Add(name))
                {
                    throw Invalid(source, $"duplicate tensor name {Quote(name)} in the header");
                }
                entries.Add(ParseEntry(name, property.Value, dataLength, source));
            }
            CheckNoOverlap(entries, source);
            return new SafeTensorsHeader(entries, metadata);
        }
    }

    /// <summary>
    /// The JSON header for <paramref name="tensors"/> laid out back to back in the given order, padded with
    /// spaces so the data section starts 8-byte aligned in the file.
    /// </summary>
    internal static byte[] Format(IReadOnlyList<KeyValuePair<string, Tensor>> tensors, IReadOnlyDictionary<string, string>? metadata)
    {
        var buffer = new ArrayBufferWriter<byte>();
        // Relaxed escaping keeps non-ASCII names readable; the header is never embedded in HTML.
        using (var writer = new Utf8JsonWriter(buffer, new JsonWriterOptions { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            writer.WriteStartObject();
            if (metadata is { Count: > 0 })
            {
                writer.WriteStartObject(MetadataKey);
                foreach (var (key, value) in metadata)
                {
                    writer.WriteString(key, value);
                }
                writer.WriteEndObject();
            }
            long offset = 0;
            foreach (var (name, tensor) in tensors)
            {
                writer.WriteStartObject(name);
                writer.WriteString("dtype", DTypeName(tensor.DType));
                writer.WriteStartArray("shape");
                foreach (int dim in tensor.Shape.Dims)
                {
                    writer.WriteNumberValue(dim);
                }
                writer.WriteEndArray();
                writer.WriteStartArray("data_offsets");
                writer.WriteNumberValue(offset);
                offset += tensor.ByteCount;
                writer.WriteNumberValue(offset);
                writer.WriteEndArray();
                writer.WriteEndObject();
            }
            writer.WriteEndObject();
        }
        int length = buffer.WrittenCount;
        int padded = checked((length + PrefixBytes - 1) / PrefixBytes * PrefixBytes);
        var header = new byte[padded];
        buffer.WrittenSpan.CopyTo(header);
        header.AsSpan(length).Fill((byte)' ');
        return header;
    }

    /// <summary>The safetensors name of a dtype.</summary>
    internal static string DTypeName(DType dtype) => dtype switch
    {
        DType.F32 => "F32",
        DType.F16 => "F16",
        DType.BF16 => "BF16",
        DType.F64 => "F64",
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "no safetensors name"),
    };

    /// <summary>The error for a fault in the file.</summary>
    internal static InvalidDataException Invalid(string source, string problem, Exception? inner = null) =>
        new($"{source}: {problem}", inner);

    /// <summary>A name for messages, quoted and cut short so a hostile header cannot produce a huge message.</summary>
    internal static string Quote(string name) =>
        name.Length <= 100 ? $"'{name}'" : $"'{name[..100]}…' ({name.Length} characters)";

    private static void ParseMetadata(JsonElement value, OrderedDictionary<string, string> metadata, string source)
    {
        if (value.ValueKind != JsonValueKind.Object)
        {
            throw Invalid(source, $"'{MetadataKey}' is {Describe(value)}, expected a JSON object of string values");
        }
        foreach (var pair in value.EnumerateObject())
        {
            string key = NameOf(pair, $"a key of '{MetadataKey}'", source);
            string what = $"'{MetadataKey}' value for key {Quote(key)}";
            if (pair.Value.ValueKind != JsonValueKind.String)
            {
                throw Invalid(source, $"{what} is {Describe(pair.Value)}, expected a string");
            }
            if (!metadata.TryAdd(key, TextOf(pair.Value, what, source)))
            {
                throw Invalid(source, $"duplicate key {Quote(key)} in '{MetadataKey}'");
            }
        }
    }

    private static SafeTensorsEntry ParseEntry(string name, JsonElement value, long dataLength, string source)
    {
        string where = $"tensor {Quote(name)}";
        if (value.ValueKind != JsonValueKind.Object)
        {
            throw Invalid(source, $"{where}: the entry is {Describe(value)}, expected an object with dtype, shape and data_offsets");
        }
        JsonElement? dtypeElement = null, shapeElement = null, offsetsElement = null;
        foreach (var field in value.EnumerateObject())
        {
            string fieldName = NameOf(field, $"{where}: a field name", source);
            ref JsonElement? slot = ref dtypeElement;
            switch (fieldName)
            {
                case "dtype":
                    break;
                case "shape":
                    slot = ref shapeElement;
                    break;
                case "data_offsets":
                    slot = ref offsetsElement;
                    break;
                default:
                    throw Invalid(source, $"{where}: unexpected field {Quote(fieldName)} (expected only dtype, shape and data_offsets)");
            }
            if (slot is not null)
            {
                throw Invalid(source, $"{where}: field '{fieldName}' appears twice");
            }
            slot = field.Value;
        }
        var dtype = ParseDType(Required(dtypeElement, "dtype"), where, source);
        var shape = ParseShape(Required(shapeElement, "shape"), where, source);
        var (begin, end) = ParseOffsets(Required(offsetsElement, "data_offsets"), where, source);
        string offsets = $"data_offsets [{begin}, {end}]";
        if (begin > end)
        {
            throw Invalid(source, $"{where}: {offsets} begin after they end");
        }
        if (end > (ulong)dataLength)
        {
            throw Invalid(source, $"{where}: {offsets} reach beyond the data section, which is {dataLength} bytes long");
        }
        long byteCount = ByteCount(shape, dtype, where, source);
        if ((ulong)byteCount != end - begin)
        {
            throw Invalid(source, $"{where}: shape {Shape.Format(shape)} of {DTypeName(dtype)} ({dtype.SizeInBytes()} bytes each) needs {byteCount} bytes, but {offsets} span {end - begin}");
        }
        return new SafeTensorsEntry(name, dtype, new Shape(shape), (long)begin, (long)end);

        JsonElement Required(JsonElement? element, string field) =>
            element ?? throw Invalid(source, $"{where}: missing field '{field}'");
    }

    private static DType ParseDType(JsonElement element, string where, string source)
    {
        if (element.ValueKind != JsonValueKind.String)
        {
            throw Invalid(source, $"{where}: dtype is {Describe(element)}, expected a string such as \"F32\"");
        }
        string name = TextOf(element, $"{where}: dtype", source);
        return name switch
        {
            "F32" => DType.F32,
            "F16" => DType.F16,
            "BF16" => DType.BF16,
            "F64" => DType.F64,
            _ when OtherFormatDTypes.Contains(name) =>
                throw Invalid(source, $"{where}: dtype '{name}' is a valid safetensors dtype but not supported here (supported: {SupportedList})"),
            _ => throw Invalid(source, $"{where}: dtype {Quote(name)} is not a safetensors dtype (supported here: {SupportedList})"),
        };
    }

    private static int[] ParseShape(JsonElement element, string where, string source)
    {
        if (element.ValueKind != JsonValueKind.Array)
        {
            throw Invalid(source, $"{where}: shape is {Describe(element)}, expected an array of non-negative integers");
        }
        var dims = new int[element.GetArrayLength()];
        int axis = 0;
        foreach (var dim in element.EnumerateArray())
        {
            if (dim.ValueKind != JsonValueKind.Number || !dim.TryGetInt64(out long value) || value < 0)
            {
                throw Invalid(source, $"{where}: shape[{axis}] is {Describe(dim)}, expected a non-negative integer");
            }
            if (value > int.MaxValue)
            {
                throw Invalid(source, $"{where}: shape[{axis}] is {value}, larger than the largest dimension supported ({int.MaxValue})");
            }
            dims[axis++] = (int)value;
        }
        return dims;
    }

    private static (ulong Begin, ulong End) ParseOffsets(JsonElement element, string where, string source)
    {
        if (element.ValueKind != JsonValueKind.Array || element.GetArrayLength() != 2)
        {
            string actual = element.ValueKind == JsonValueKind.Array
                ? $"an array of {element.GetArrayLength()} values"
                : Describe(element);
            throw Invalid(source, $"{where}: data_offsets is {actual}, expected an array of two non-negative integers [begin, end]");
        }
        Span<ulong> values = stackalloc ulong[2];
        int i = 0;
        foreach (var item in element.EnumerateArray())
        {
            if (item.ValueKind != JsonValueKind.Number || !item.TryGetUInt64(out values[i]))
            {
                throw Invalid(source, $"{where}: data_offsets[{i}] is {Describe(item)}, expected a non-negative integer");
            }
            i++;
        }
        return (values[0], values[1]);
    }

    /// <summary>Bytes of a tensor, refusing shapes whose element count <see cref="Shape"/> could not hold.</summary>
    private static long ByteCount(int[] dims, DType dtype, string where, string source)
    {
        // Left to right, as Shape.ElementCount multiplies: an intermediate overflow would throw there even when a later dimension is 0.
        long count = 1;
        foreach (int dim in dims)
        {
            if (count != 0 && dim > long.MaxValue / count)
            {
                throw Invalid(source, $"{where}: shape {Shape.Format(dims)} has more elements than a 64-bit count holds");
            }
            count *= dim;
        }
        int size = dtype.SizeInBytes();
        if (count > long.MaxValue / size)
        {
            throw Invalid(source, $"{where}: shape {Shape.Format(dims)} of {DTypeName(dtype)} needs more bytes than a 64-bit length holds");
        }
        return count * size;
    }

    private static void CheckNoOverlap(List<SafeTensorsEntry> entries, string source)
    {
        // Empty ranges hold no bytes, so they cannot overlap anything.
        var ranges = entries.Where(e => e.ByteCount > 0).OrderBy(e => e.Begin).ToList();
        SafeTensorsEntry? furthest = null;
        foreach (var entry in ranges)
        {
            if (furthest is not null && entry.Begin < furthest.End)
            {
                throw Invalid(source, $"the byte ranges of tensors {Quote(furthest.Name)} [{furthest.Begin}, {furthest.End}] and {Quote(entry.Name)} [{entry.Begin}, {entry.End}] overlap");
            }
            if (furthest is null || entry.End > furthest.End)
            {
                furthest = entry;
            }
        }
    }

    // System.Text.Json checks \u escapes only when a string is decoded, so an unpaired surrogate surfaces here.
    private static string NameOf(JsonProperty property, string what, string source)
    {
        try
        {
            return property.Name;
        }
        catch (InvalidOperationException e)
        {
            throw Invalid(source, $"{what} has a \\u escape that is not valid UTF-16 (an unpaired surrogate)", e);
        }
    }

    private static string TextOf(JsonElement element, string what, string source)
    {
        try
        {
            return element.GetString()!;
        }
        catch (InvalidOperationException e)
        {
            throw Invalid(source, $"{what} has a \\u escape that is not valid UTF-16 (an unpaired surrogate)", e);
        }
    }

    /// <summary>A JSON value for messages: short literals verbatim, anything else by kind.</summary>
    private static string Describe(JsonElement element)
    {
        switch (element.ValueKind)
        {
            case JsonValueKind.Number:
            case JsonValueKind.String:
                string raw = element.GetRawText();
                return raw.Length <= 40 ? raw : $"{raw[..40]}… ({raw.Length} characters)";
            case JsonValueKind.Object:
                return "a JSON object";
            case JsonValueKind.Array:
                return "a JSON array";
            case JsonValueKind.True:
            case JsonValueKind.False:
                return "a JSON boolean";
            case JsonValueKind.Null:
                return "null";
            default:
                return element.ValueKind.ToString();
        }
    }
}
