using System.Buffers.Binary;
using System.Text;
using Attention.Native.IO;
using Attention.Native.Tests.Ops;
using Attention.Native.Tests.Support;

namespace Attention.Native.Tests.IO;

public class SafeTensorsTests
{
    private static readonly Backend Cpu = Backend.Cpu;

    private static readonly DType[] AllDTypes = [DType.F32, DType.F16, DType.BF16, DType.F64];

    private static readonly Shape[] RoundTripShapes =
    [
        new Shape(),          // scalar: one element
        new Shape(0),         // zero elements
        new Shape(3, 0, 2),   // zero elements in the middle of the shape
        new Shape(1),
        new Shape(7),
        new Shape(2, 3),
        new Shape(1, 5, 1, 3),
        new Shape(3, 1, 9),
    ];

    private string _folder = null!;

    [SetUp]
    public void CreateFolder()
    {
        _folder = Path.Combine(Path.GetTempPath(), "safetensors-tests-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(_folder);
    }

    [TearDown]
    public void DeleteFolder() => Directory.Delete(_folder, recursive: true);

    [TestCase(DType.F32)]
    [TestCase(DType.F16)]
    [TestCase(DType.BF16)]
    [TestCase(DType.F64)]
    public void Serialize_then_read_is_bit_exact_for_every_shape(DType dtype)
    {
        var tensors = RoundTripShapes.Select((shape, i) => RandomTensor(shape, dtype, seed: 100 + i)).ToList();
        try
        {
            var named = tensors.Select((t, i) => Pair($"layer.{i}.weight", t)).ToList();
            using var content = SafeTensors.Read(SafeTensors.Serialize(named));
            AssertSameTensors(named, content);
        }
        finally
        {
            tensors.ForEach(t => t.Dispose());
        }
    }

    [Test]
    public void Write_then_read_keeps_mixed_dtypes_in_the_given_order()
    {
        // Names out of alphabetical order and dtypes of different sizes interleaved, so both order and offsets are exercised.
        var specs = new (string Name, Shape Shape, DType DType)[]
        {
            ("z.bias", new Shape(5), DType.F16),
            ("a.weight", new Shape(3, 4), DType.F32),
            ("m.scale", new Shape(), DType.F64),
            ("empty", new Shape(0, 8), DType.BF16),
            ("b.weight", new Shape(2, 3, 5), DType.BF16),
            ("c", new Shape(1), DType.F64),
        };
        var named = specs.Select((s, i) => Pair(s.Name, RandomTensor(s.Shape, s.DType, seed: 200 + i))).ToList();
        try
        {
            string path = Path.Combine(_folder, "mixed.safetensors");
            SafeTensors.Write(path, named);
            using var content = SafeTensors.Read(path);
            AssertSameTensors(named, content);
            Assert.That(File.ReadAllBytes(path), Is.EqualTo(SafeTensors.Serialize(named)), "Write and Serialize produce the same file");
        }
        finally
        {
            named.ForEach(p => p.Value.Dispose());
        }
    }

    [Test]
    public void Values_survive_a_round_trip_in_every_dtype()
    {
        var values = TestData.Normal(300, 24);
        foreach (var dtype in AllDTypes)
        {
            using var t = Cpu.FromArray(values, new Shape(2, 12), dtype);
            using var content = SafeTensors.Read(SafeTensors.Serialize([Pair("x", t)]));
            Assert.That(content["x"].ToDoubleArray(), Is.EqualTo(t.ToDoubleArray()), dtype.ToString());
        }
    }

    [Test]
    public void Metadata_round_trips_and_is_empty_when_absent()
    {
        var metadata = new Dictionary<string, string>
        {
            ["format"] = "pt",
            ["note"] = "quotes \" backslash \\ newline \n tab \t",
            ["unicode"] = "naïve — 日本語 🙂",
            ["empty"] = "",
        };
        using var t = RandomTensor(new Shape(2, 2), DType.F32, seed: 1);
        using (var content = SafeTensors.Read(SafeTensors.Serialize([Pair("t", t)], metadata)))
        {
            Assert.That(content.Metadata, Is.EquivalentTo(metadata));
            Assert.That(content.Metadata.Keys, Is.EqualTo(metadata.Keys), "metadata keeps its order");
        }
        using (var content = SafeTensors.Read(SafeTensors.Serialize([Pair("t", t)])))
        {
            Assert.That(content.Metadata, Is.Empty);
        }
        using (var content = SafeTensors.Read(SafeTensors.Serialize([], metadata)))
        {
            Assert.Multiple(() =>
            {
                Assert.That(content.Names, Is.Empty);
                Assert.That(content.Metadata, Is.EquivalentTo(metadata));
            });
        }
    }

    [Test]
    public void Header_is_padded_with_spaces_to_8_byte_alignment()
    {
        // Names of 1 to 16 characters move the unpadded header length through every remainder mod 8.
        using var t = RandomTensor(new Shape(3), DType.F16, seed: 2);
        var remainders = new HashSet<int>();
        for (int nameLength = 1; nameLength <= 16; nameLength++)
        {
            var file = SafeTensors.Serialize([Pair(new string('n', nameLength), t)]);
            long headerLength = (long)BinaryPrimitives.ReadUInt64LittleEndian(file);
            string json = Encoding.UTF8.GetString(file, 8, (int)headerLength);
            string trimmed = json.TrimEnd(' ');
            remainders.Add(trimmed.Length % 8);
            Assert.Multiple(() =>
            {
                Assert.That((8 + headerLength) % 8, Is.Zero, $"name length {nameLength}: data starts aligned");
                Assert.That(json.Length - trimmed.Length, Is.LessThan(8), "no more padding than needed");
                Assert.That(trimmed, Does.EndWith("}"));
                Assert.That(file.Length, Is.EqualTo(8 + headerLength + t.ByteCount));
            });
        }
        Assert.That(remainders, Has.Count.EqualTo(8), "every padding amount was exercised");
    }

    [Test]
    public void Hand_built_file_with_keys_out_of_data_order_and_padding_is_read()
    {
        // Data section: b (2 × F32) at [0, 8), c (3 × F16) at [8, 14), a (F64 scalar) at [14, 22), d (2 × BF16) at [22, 26),
        // an empty tensor at [26, 26), then 6 unused bytes. The header lists them in another order, with fields reordered.
        var data = new List<byte>();
        data.AddRange(BitConverter.GetBytes(1.5f));
        data.AddRange(BitConverter.GetBytes(-2.25f));
        foreach (var h in new[] { (Half)0.5, (Half)(-3), (Half)65504 })
        {
            data.AddRange(BitConverter.GetBytes(BitConverter.HalfToUInt16Bits(h)));
        }
        data.AddRange(BitConverter.GetBytes(Math.PI));
        // bfloat16 is the top half of a float32: 1.0 = 0x3F80, -0.375 = 0xBEC0.
        data.AddRange(new byte[] { 0x80, 0x3F, 0xC0, 0xBE });
        data.AddRange(new byte[6]);
        string json = """
            {
              "a": {"data_offsets": [14, 22], "shape": [], "dtype": "F64"},
              "__metadata__": {"format": "pt", "source": "hand-built"},
              "d": {"shape": [1, 2], "dtype": "BF16", "data_offsets": [22, 26]},
              "b": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
              "e": {"dtype": "F32", "shape": [4, 0], "data_offsets": [26, 26]},
              "c": {"dtype": "F16", "data_offsets": [8, 14], "shape": [3, 1]}
            }
            """ + new string(' ', 13);
        using var content = SafeTensors.Read(BuildFile(json, [.. data]));
        Assert.Multiple(() =>
        {
            Assert.That(content.Names, Is.EqualTo(new[] { "a", "d", "b", "e", "c" }));
            Assert.That(content.Metadata, Is.EquivalentTo(new Dictionary<string, string> { ["format"] = "pt", ["source"] = "hand-built" }));
            AssertTensor(content["a"], DType.F64, new Shape(), [Math.PI]);
            AssertTensor(content["b"], DType.F32, new Shape(2), [1.5, -2.25]);
            AssertTensor(content["c"], DType.F16, new Shape(3, 1), [0.5, -3, 65504]);
            AssertTensor(content["d"], DType.BF16, new Shape(1, 2), [1.0, -0.375]);
            AssertTensor(content["e"], DType.F32, new Shape(4, 0), []);
        });
    }

    [Test]
    public void Escaped_names_are_unescaped()
    {
        using var content = SafeTensors.Read(BuildFile("""{"caf\u00e9.w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}""", new byte[4]));
        Assert.That(content.Names, Is.EqualTo(new[] { "café.w" }));
    }

    public static IEnumerable<TestCaseData> MalformedFiles()
    {
        static TestCaseData Case(string name, byte[] file, string fragment) => new TestCaseData(file, fragment).SetName("Malformed_" + name);
        static TestCaseData Json(string name, string json, int dataLength, string fragment) => Case(name, BuildFile(json, new byte[dataLength]), fragment);
        const string F32x2 = """{"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}""";

        yield return Case("empty_file", [], "shorter than the 8-byte header length");
        yield return Case("seven_bytes", new byte[7], "7 bytes long, shorter than the 8-byte");
        yield return Case("header_longer_than_file", LengthPrefixed(100, new byte[20]), "header length is 100 bytes, larger than the 20 bytes");
        yield return Case("header_length_absurd", LengthPrefixed(200_000_000, new byte[20]), "over the 100000000-byte limit");
        yield return Case("header_length_huge", LengthPrefixed(ulong.MaxValue, new byte[20]), "over the 100000000-byte limit");
        yield return Case("header_length_zero", LengthPrefixed(0, []), "not valid JSON");
        yield return Case("header_not_utf8", LengthPrefixed(4, [(byte)'{', 0xFF, 0xFE, (byte)'}']), "not valid UTF-8");
        yield return Json("header_not_json", "{\"a\": ", 0, "not valid JSON");
        yield return Json("header_trailing_garbage", "{} x", 0, "not valid JSON");
        yield return Json("header_array", "[1, 2]", 0, "header is a JSON array, expected a JSON object");
        yield return Json("header_string", "\"weights\"", 0, "header is \"weights\", expected a JSON object");
        yield return Json("entry_number", """{"a": 5}""", 0, "tensor 'a': the entry is 5, expected an object");
        yield return Json("entry_array", """{"a": [0, 8]}""", 8, "tensor 'a': the entry is a JSON array, expected an object");
        yield return Json("missing_dtype", """{"a": {"shape": [2], "data_offsets": [0, 8]}}""", 8, "tensor 'a': missing field 'dtype'");
        yield return Json("missing_shape", """{"a": {"dtype": "F32", "data_offsets": [0, 8]}}""", 8, "tensor 'a': missing field 'shape'");
        yield return Json("missing_offsets", """{"a": {"dtype": "F32", "shape": [2]}}""", 8, "tensor 'a': missing field 'data_offsets'");
        yield return Json("extra_field", """{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8], "stride": [1]}}""", 8, "tensor 'a': unexpected field 'stride'");
        yield return Json("repeated_field", """{"a": {"dtype": "F32", "dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}""", 8, "tensor 'a': field 'dtype' appears twice");
        yield return Json("dtype_number", """{"a": {"dtype": 4, "shape": [2], "data_offsets": [0, 8]}}""", 8, "tensor 'a': dtype is 4, expected a string");
        yield return Json("dtype_unknown", """{"a": {"dtype": "Q4_K", "shape": [2], "data_offsets": [0, 8]}}""", 8, "dtype 'Q4_K' is not a safetensors dtype");
        yield return Json("dtype_lowercase", """{"a": {"dtype": "f32", "shape": [2], "data_offsets": [0, 8]}}""", 8, "dtype 'f32' is not a safetensors dtype");
        yield return Json("dtype_I8_unsupported", """{"a": {"dtype": "I8", "shape": [8], "data_offsets": [0, 8]}}""", 8, "dtype 'I8' is a valid safetensors dtype but not supported here");
        yield return Json("dtype_BOOL_unsupported", """{"a": {"dtype": "BOOL", "shape": [8], "data_offsets": [0, 8]}}""", 8, "dtype 'BOOL' is a valid safetensors dtype but not supported here");
        yield return Json("shape_not_array", """{"a": {"dtype": "F32", "shape": "2", "data_offsets": [0, 8]}}""", 8, "tensor 'a': shape is \"2\", expected an array");
        yield return Json("shape_negative", """{"a": {"dtype": "F32", "shape": [2, -1], "data_offsets": [0, 8]}}""", 8, "shape[1] is -1, expected a non-negative integer");
        yield return Json("shape_fraction", """{"a": {"dtype": "F32", "shape": [2.5], "data_offsets": [0, 8]}}""", 8, "shape[0] is 2.5, expected a non-negative integer");
        yield return Json("shape_exponent", """{"a": {"dtype": "F32", "shape": [2e0], "data_offsets": [0, 8]}}""", 8, "shape[0] is 2e0, expected a non-negative integer");
        yield return Json("shape_string_dim", """{"a": {"dtype": "F32", "shape": ["2"], "data_offsets": [0, 8]}}""", 8, "shape[0] is \"2\", expected a non-negative integer");
        yield return Json("shape_null_dim", """{"a": {"dtype": "F32", "shape": [null], "data_offsets": [0, 8]}}""", 8, "shape[0] is null, expected a non-negative integer");
        yield return Json("shape_dim_too_large", """{"a": {"dtype": "F32", "shape": [3000000000], "data_offsets": [0, 8]}}""", 8, "shape[0] is 3000000000, larger than the largest dimension supported");
        yield return Json("shape_count_overflows", """{"a": {"dtype": "F32", "shape": [2147483647, 2147483647, 2147483647, 0], "data_offsets": [0, 0]}}""", 0, "has more elements than a 64-bit count holds");
        yield return Json("shape_bytes_overflow", """{"a": {"dtype": "F64", "shape": [2147483647, 2147483647], "data_offsets": [0, 0]}}""", 0, "needs more bytes than a 64-bit length holds");
        yield return Json("offsets_not_array", """{"a": {"dtype": "F32", "shape": [2], "data_offsets": {"begin": 0}}}""", 8, "data_offsets is a JSON object, expected an array of two");
        yield return Json("offsets_one_value", """{"a": {"dtype": "F32", "shape": [2], "data_offsets": [8]}}""", 8, "data_offsets is an array of 1 values, expected an array of two");
        yield return Json("offsets_three_values", """{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4, 8]}}""", 8, "data_offsets is an array of 3 values");
        yield return Json("offsets_negative", """{"a": {"dtype": "F32", "shape": [2], "data_offsets": [-8, 0]}}""", 8, "data_offsets[0] is -8, expected a non-negative integer");
        yield return Json("offsets_string", """{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, "8"]}}""", 8, "data_offsets[1] is \"8\", expected a non-negative integer");
        yield return Json("offsets_beyond_u64", """{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 18446744073709551616]}}""", 8, "data_offsets[1] is 18446744073709551616, expected a non-negative integer");
        yield return Json("size_mismatch", """{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}""", 8, "shape [2] of F32 (4 bytes each) needs 8 bytes, but data_offsets [0, 4] span 4");
        yield return Json("size_mismatch_scalar", """{"a": {"dtype": "F16", "shape": [], "data_offsets": [0, 0]}}""", 8, "shape [] of F16 (2 bytes each) needs 2 bytes, but data_offsets [0, 0] span 0");
        yield return Json("begin_after_end", """{"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}}""", 8, "data_offsets [8, 0] begin after they end");
        yield return Json("beyond_data", """{"a": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}""", 8, "data_offsets [4, 12] reach beyond the data section, which is 8 bytes long");
        yield return Json("beyond_data_huge", """{"a": {"dtype": "F32", "shape": [2], "data_offsets": [18446744073709551608, 18446744073709551615]}}""", 8, "reach beyond the data section");
        yield return Json("overlap", """{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}""", 12,
            "the byte ranges of tensors 'a' [0, 8] and 'b' [4, 12] overlap");
        yield return Json("overlap_contained", """{"big": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}, "x": {"dtype": "F16", "shape": [1], "data_offsets": [12, 14]}, "y": {"dtype": "F16", "shape": [1], "data_offsets": [2, 4]}}""", 16,
            "the byte ranges of tensors 'big' [0, 16] and 'y' [2, 4] overlap");
        yield return Json("overlap_same_range", $$"""{"a": {{F32x2}}, "b": {{F32x2}}}""", 8, "tensors 'a' [0, 8] and 'b' [0, 8] overlap");
        yield return Json("duplicate_name", $$"""{"a": {{F32x2}}, "a": {{F32x2}}}""", 8, "duplicate tensor name 'a'");
        yield return Json("duplicate_name_escaped", $$"""{"a": {{F32x2}}, "\u0061": {{F32x2}}}""", 8, "duplicate tensor name 'a'");
        yield return Json("name_lone_surrogate", $$"""{"a\uD800": {{F32x2}}}""", 8, "a key of the header has a \\u escape that is not valid UTF-16");
        yield return Json("dtype_lone_surrogate", """{"a": {"dtype": "F\uDC00", "shape": [2], "data_offsets": [0, 8]}}""", 8, "tensor 'a': dtype has a \\u escape that is not valid UTF-16");
        yield return Json("metadata_lone_surrogate", """{"__metadata__": {"k": "\uD800\u0041"}}""", 0, "'__metadata__' value for key 'k' has a \\u escape that is not valid UTF-16");
        yield return Json("field_lone_surrogate", """{"a": {"dtype": "F32", "\uDFFF": 1, "shape": [2], "data_offsets": [0, 8]}}""", 8, "tensor 'a': a field name has a \\u escape");
        yield return Json("metadata_key_lone_surrogate", """{"__metadata__": {"\uD800": "v"}}""", 0, "a key of '__metadata__' has a \\u escape");
        yield return Json("metadata_not_object", """{"__metadata__": ["pt"]}""", 0, "'__metadata__' is a JSON array, expected a JSON object of string values");
        yield return Json("metadata_number_value", """{"__metadata__": {"format": "pt", "epoch": 3}}""", 0, "'__metadata__' value for key 'epoch' is 3, expected a string");
        yield return Json("metadata_null_value", """{"__metadata__": {"format": null}}""", 0, "value for key 'format' is null, expected a string");
        yield return Json("metadata_object_value", """{"__metadata__": {"config": {"layers": "2"}}}""", 0, "value for key 'config' is a JSON object, expected a string");
        yield return Json("metadata_twice", """{"__metadata__": {}, "__metadata__": {}}""", 0, "duplicate key '__metadata__'");
        yield return Json("metadata_duplicate_key", """{"__metadata__": {"k": "1", "k": "2"}}""", 0, "duplicate key 'k' in '__metadata__'");
    }

    [TestCaseSource(nameof(MalformedFiles))]
    public void Malformed_file_is_refused_with_a_precise_message(byte[] file, string fragment)
    {
        var e = Assert.Throws<InvalidDataException>(() => SafeTensors.Read(file, source: "model.safetensors"));
        Assert.That(e!.Message, Does.StartWith("model.safetensors: ").And.Contain(fragment));
    }

    [Test]
    public void Malformed_file_on_disk_is_refused_naming_its_path()
    {
        string path = Path.Combine(_folder, "short.safetensors");
        File.WriteAllBytes(path, BuildFile("""{"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 12]}}""", new byte[8]));
        var e = Assert.Throws<InvalidDataException>(() => SafeTensors.Read(path));
        Assert.That(e!.Message, Does.StartWith(path + ": ").And.Contain("reach beyond the data section, which is 8 bytes long"));
        File.WriteAllBytes(path, new byte[3]);
        e = Assert.Throws<InvalidDataException>(() => SafeTensors.Read(path));
        Assert.That(e!.Message, Does.StartWith(path + ": ").And.Contain("3 bytes long"));
    }

    [Test]
    public void Random_corruption_reads_fine_or_throws_InvalidDataException()
    {
        var valid = ValidSampleFile();
        int headerEnd = 8 + (int)BinaryPrimitives.ReadUInt64LittleEndian(valid);
        var random = new Random(20240611);
        int readFine = 0, refused = 0;
        for (int iteration = 0; iteration < 750; iteration++)
        {
            var file = (byte[])valid.Clone();
            int mode = iteration % 5;
            switch (mode)
            {
                case 0:
                case 4:
                    // Bit flips, mostly in the prefix and header where they change the structure.
                    for (int flips = 1 + random.Next(4); flips > 0; flips--)
                    {
                        int at = random.Next(2) == 0 ? random.Next(headerEnd) : random.Next(file.Length);
                        file[at] ^= (byte)(1 << random.Next(8));
                    }
                    break;
                case 1:
                    for (int replaced = 1 + random.Next(4); replaced > 0; replaced--)
                    {
                        file[random.Next(headerEnd)] = (byte)random.Next(256);
                    }
                    break;
                case 2:
                    // Digits of the header replaced by other digits: still JSON, but shapes and offsets disagree.
                    var digits = Enumerable.Range(8, headerEnd - 8).Where(i => char.IsAsciiDigit((char)file[i])).ToArray();
                    for (int replaced = 1 + random.Next(3); replaced > 0; replaced--)
                    {
                        file[digits[random.Next(digits.Length)]] = (byte)('0' + random.Next(10));
                    }
                    break;
            }
            if (mode >= 3)
            {
                Array.Resize(ref file, random.Next(file.Length));
            }
            bool fine = ReadsFineOrRefuses(() => SafeTensors.Read(file, source: "fuzz"), "fuzz", iteration, file);
            if (iteration % 10 == 3)
            {
                // Now and then through the file reader too, which must agree with the in-memory one.
                string path = Path.Combine(_folder, "fuzz.safetensors");
                File.WriteAllBytes(path, file);
                Assert.That(ReadsFineOrRefuses(() => SafeTensors.Read(path), path, iteration, file), Is.EqualTo(fine), $"iteration {iteration}: file and memory readers agree");
            }
            if (fine)
            {
                readFine++;
            }
            else
            {
                refused++;
            }
        }
        TestContext.Out.WriteLine($"{readFine} read fine, {refused} refused");
        Assert.Multiple(() =>
        {
            Assert.That(readFine, Is.GreaterThan(10), "some corruptions (e.g. in the data) still read");
            Assert.That(refused, Is.GreaterThan(500), "most corruptions are refused");
        });
    }

    /// <summary>True when the file reads (and every tensor in it is whole), false when refused with InvalidDataException; anything else fails.</summary>
    private static bool ReadsFineOrRefuses(Func<SafeTensorsContent> read, string source, int iteration, byte[] file)
    {
        try
        {
            using var content = read();
            foreach (var name in content.Names)
            {
                Assert.That(content[name].ToDoubleArray(), Has.Length.EqualTo(content[name].ElementCount));
            }
            return true;
        }
        catch (InvalidDataException e)
        {
            Assert.That(e.Message, Does.StartWith(source + ": "));
            return false;
        }
        catch (Exception e) when (e is not AssertionException)
        {
            Assert.Fail($"iteration {iteration} ({file.Length} bytes) threw {e.GetType().Name}: {e.Message}\n{Convert.ToBase64String(file)}");
            throw;
        }
    }

    [Test]
    public void Indexer_names_the_file_and_the_available_tensors_when_absent()
    {
        string path = Path.Combine(_folder, "named.safetensors");
        File.WriteAllBytes(path, ValidSampleFile());
        using var content = SafeTensors.Read(path);
        var e = Assert.Throws<KeyNotFoundException>(() => _ = content["missing.weight"]);
        Assert.Multiple(() =>
        {
            Assert.That(e!.Message, Does.Contain(path).And.Contain("'missing.weight'"));
            Assert.That(e.Message, Does.Contain("available (4): 'embed', 'norm.scale', 'empty', 'proj.weight'"));
            Assert.That(content.TryGet("missing.weight", out _), Is.False);
            Assert.That(content.TryGet("embed", out var embed), Is.True);
            Assert.That(embed, Is.SameAs(content["embed"]));
        });
    }

    [Test]
    public void Detach_transfers_ownership_and_Dispose_frees_the_rest()
    {
        var content = SafeTensors.Read(ValidSampleFile());
        var kept = content["embed"];
        var expected = kept.ToDoubleArray();
        var detached = content.Detach("embed");
        var owned = content["proj.weight"];
        try
        {
            Assert.Multiple(() =>
            {
                Assert.That(detached, Is.SameAs(kept));
                Assert.That(content.Names, Is.EqualTo(new[] { "norm.scale", "empty", "proj.weight" }));
                Assert.That(content.Tensors.ContainsKey("embed"), Is.False);
                Assert.That(content.TryGet("embed", out _), Is.False);
                Assert.Throws<KeyNotFoundException>(() => content.Detach("embed"), "a tensor is detached once");
            });
            content.Dispose();
            Assert.Multiple(() =>
            {
                Assert.That(detached.IsDisposed, Is.False);
                Assert.That(detached.ToDoubleArray(), Is.EqualTo(expected));
                Assert.That(owned.IsDisposed, Is.True);
                Assert.Throws<ObjectDisposedException>(() => _ = content.Names);
                Assert.Throws<ObjectDisposedException>(() => content.Detach("norm.scale"));
            });
            Assert.DoesNotThrow(content.Dispose, "disposing twice is harmless");
        }
        finally
        {
            detached.Dispose();
            content.Dispose();
        }
    }

    [Test]
    public void Write_to_a_missing_folder_throws_and_creates_nothing()
    {
        using var t = RandomTensor(new Shape(4), DType.F32, seed: 3);
        string missing = Path.Combine(_folder, "no-such-folder");
        Assert.Throws<DirectoryNotFoundException>(() => SafeTensors.Write(Path.Combine(missing, "w.safetensors"), [Pair("t", t)]));
        Assert.That(Directory.Exists(missing), Is.False);
        Assert.That(Directory.EnumerateFileSystemEntries(_folder), Is.Empty);
    }

    [Test]
    public void Write_under_a_file_instead_of_a_folder_throws_and_leaves_nothing()
    {
        using var t = RandomTensor(new Shape(4), DType.F32, seed: 4);
        string notAFolder = Path.Combine(_folder, "plain-file");
        File.WriteAllText(notAFolder, "x");
        Assert.Throws(Is.InstanceOf<IOException>(), () => SafeTensors.Write(Path.Combine(notAFolder, "w.safetensors"), [Pair("t", t)]));
        Assert.That(Directory.EnumerateFileSystemEntries(_folder), Is.EqualTo(new[] { notAFolder }));
        Assert.That(File.ReadAllText(notAFolder), Is.EqualTo("x"));
    }

    [Test]
    public void Write_failing_at_the_final_rename_removes_its_temporary_file()
    {
        // The target name is longer than a folder entry may be: the data is fully written to the (shortened) temporary
        // file, then the rename to the target fails.
        using var t = RandomTensor(new Shape(64), DType.F32, seed: 5);
        string target = Path.Combine(_folder, new string('n', 300));
        Assert.Throws(Is.InstanceOf<IOException>().Or.InstanceOf<UnauthorizedAccessException>(), () => SafeTensors.Write(target, [Pair("t", t)]));
        Assert.That(Directory.EnumerateFileSystemEntries(_folder), Is.Empty, "no temporary file is left behind");
    }

    [Test]
    public void Write_replaces_an_existing_file_and_a_refused_write_leaves_it_untouched()
    {
        string path = Path.Combine(_folder, "model.safetensors");
        using var first = RandomTensor(new Shape(2, 2), DType.F32, seed: 6);
        using var second = RandomTensor(new Shape(3), DType.BF16, seed: 7);
        SafeTensors.Write(path, [Pair("first", first)]);
        SafeTensors.Write(path, [Pair("second", second)], new Dictionary<string, string> { ["v"] = "2" });
        var written = File.ReadAllBytes(path);
        using (var content = SafeTensors.Read(path))
        {
            Assert.That(content.Names, Is.EqualTo(new[] { "second" }));
            Assert.That(content.Metadata["v"], Is.EqualTo("2"));
        }
        var disposed = RandomTensor(new Shape(1), DType.F32, seed: 8);
        disposed.Dispose();
        Assert.Throws<ArgumentException>(() => SafeTensors.Write(path, [Pair("a", first), Pair("b", disposed)]));
        Assert.Multiple(() =>
        {
            Assert.That(File.ReadAllBytes(path), Is.EqualTo(written));
            Assert.That(Directory.EnumerateFileSystemEntries(_folder), Is.EqualTo(new[] { path }));
        });
    }

    [Test]
    public void Bad_arguments_to_Write_and_Serialize_are_refused()
    {
        using var t = RandomTensor(new Shape(2), DType.F32, seed: 9);
        var disposed = RandomTensor(new Shape(2), DType.F32, seed: 10);
        disposed.Dispose();
        LinearTests.AssertArgument(() => SafeTensors.Serialize([Pair("", t)]), "tensors", "a non-empty name", "an empty name at position 0");
        LinearTests.AssertArgument(() => SafeTensors.Serialize([Pair("a", t), Pair(null!, t)]), "tensors", "a non-empty name", "null at position 1");
        LinearTests.AssertArgument(() => SafeTensors.Serialize([Pair("a", t), Pair("b", t), Pair("a", t)]), "tensors", "unique names", "'a' at positions 0 and 2");
        LinearTests.AssertArgument(() => SafeTensors.Serialize([Pair("__metadata__", t)]), "tensors", "reserved '__metadata__'", "'__metadata__' at position 0");
        LinearTests.AssertArgument(() => SafeTensors.Serialize([Pair("bad\uD800", t)]), "tensors", "valid UTF-16", "unpaired surrogate");
        LinearTests.AssertArgument(() => SafeTensors.Serialize([Pair("a", null!)]), "tensors", "a tensor for 'a'", "null");
        LinearTests.AssertArgument(() => SafeTensors.Serialize([Pair("a", disposed)]), "tensors", "a live tensor for 'a'", "a disposed one");
        LinearTests.AssertArgument(() => SafeTensors.Serialize([Pair("a", t)], new Dictionary<string, string> { ["k"] = null! }), "metadata", "a string value for 'k'", "null");
        LinearTests.AssertArgument(() => SafeTensors.Serialize([Pair("a", t)], new Dictionary<string, string> { ["k"] = "\uDC00" }), "metadata", "valid UTF-16", "unpaired surrogate");
        LinearTests.AssertArgument(() => SafeTensors.Write(Path.Combine(_folder, "x.safetensors"), [Pair("a", t), Pair("a", t)]), "tensors", "unique names", "'a' at positions 0 and 1");
        Assert.Throws<ArgumentNullException>(() => SafeTensors.Serialize(null!));
        Assert.Throws<ArgumentException>(() => SafeTensors.Write("", [Pair("a", t)]));
        Assert.That(Directory.EnumerateFileSystemEntries(_folder), Is.Empty, "a refused Write creates nothing");
    }

    [Test]
    [Category("Gpu")] // needs a device: run with the other Gpu tests, and counted with them when skipped
    public void Read_onto_the_GPU_keeps_dtypes_and_refuses_F64()
    {
        var gpu = Requires.CudaDevice();
        var named = new[] { DType.F32, DType.F16, DType.BF16 }
            .Select((dtype, i) => Pair(dtype.ToString(), RandomTensor(new Shape(3, 5), dtype, seed: 400 + i)))
            .Append(Pair("empty", RandomTensor(new Shape(0, 3), DType.F16, seed: 410)))
            .ToList();
        try
        {
            string path = Path.Combine(_folder, "gpu.safetensors");
            SafeTensors.Write(path, named);
            using (var content = SafeTensors.Read(path, gpu))
            {
                Assert.That(content.Tensors.Values.Select(v => v.Backend), Is.All.SameAs(gpu));
                AssertSameTensors(named, content);
                // Written back from device memory, the file is identical.
                var fromDevice = content.Names.Select(n => Pair(n, content[n])).ToList();
                Assert.That(SafeTensors.Serialize(fromDevice), Is.EqualTo(File.ReadAllBytes(path)));
            }
            using (var content = SafeTensors.Read(File.ReadAllBytes(path), gpu))
            {
                AssertSameTensors(named, content);
            }
            using var f64 = RandomTensor(new Shape(2), DType.F64, seed: 420);
            var e = Assert.Throws<NotSupportedException>(() => SafeTensors.Read(SafeTensors.Serialize([Pair("first", named[0].Value), Pair("x", f64)]), gpu));
            Assert.That(e!.Message, Does.Contain("tensor 'x' is F64"));
        }
        finally
        {
            named.ForEach(p => p.Value.Dispose());
        }
    }

    private static KeyValuePair<string, Tensor> Pair(string name, Tensor tensor) => new(name, tensor);

    /// <summary>A CPU tensor of random raw bytes: every bit pattern (NaN payloads, subnormals, negative zero) must survive.</summary>
    private static Tensor RandomTensor(Shape shape, DType dtype, int seed)
    {
        var bytes = new byte[shape.ElementCount * dtype.SizeInBytes()];
        new Random(seed).NextBytes(bytes);
        var tensor = Cpu.Empty(shape, dtype);
        tensor.CopyFromBytes(bytes);
        return tensor;
    }

    private static byte[] RawBytes(Tensor tensor)
    {
        var bytes = new byte[tensor.ByteCount];
        tensor.CopyToBytes(bytes);
        return bytes;
    }

    private static void AssertSameTensors(List<KeyValuePair<string, Tensor>> expected, SafeTensorsContent actual)
    {
        Assert.That(actual.Names, Is.EqualTo(expected.Select(p => p.Key)));
        Assert.That(actual.Tensors.Keys, Is.EqualTo(expected.Select(p => p.Key)), "the dictionary enumerates in file order");
        foreach (var (name, tensor) in expected)
        {
            var read = actual[name];
            Assert.Multiple(() =>
            {
                Assert.That(read.DType, Is.EqualTo(tensor.DType), name);
                Assert.That(read.Shape, Is.EqualTo(tensor.Shape), name);
                Assert.That(RawBytes(read), Is.EqualTo(RawBytes(tensor)), name);
            });
        }
    }

    private static void AssertTensor(Tensor tensor, DType dtype, Shape shape, double[] values)
    {
        Assert.That(tensor.DType, Is.EqualTo(dtype));
        Assert.That(tensor.Shape, Is.EqualTo(shape));
        Assert.That(tensor.ToDoubleArray(), Is.EqualTo(values));
    }

    /// <summary>A small valid file with metadata, mixed dtypes, a scalar and an empty tensor.</summary>
    private static byte[] ValidSampleFile()
    {
        var named = new List<KeyValuePair<string, Tensor>>
        {
            Pair("embed", RandomTensor(new Shape(4, 3), DType.BF16, seed: 11)),
            Pair("norm.scale", RandomTensor(new Shape(), DType.F32, seed: 12)),
            Pair("empty", RandomTensor(new Shape(2, 0), DType.F16, seed: 13)),
            Pair("proj.weight", RandomTensor(new Shape(3, 2), DType.F64, seed: 14)),
        };
        try
        {
            return SafeTensors.Serialize(named, new Dictionary<string, string> { ["format"] = "pt", ["step"] = "1000" });
        }
        finally
        {
            named.ForEach(p => p.Value.Dispose());
        }
    }

    /// <summary>The length prefix, then the UTF-8 header exactly as given (no padding added), then the data.</summary>
    private static byte[] BuildFile(string json, byte[] data) => LengthPrefixed((ulong)Encoding.UTF8.GetByteCount(json), [.. Encoding.UTF8.GetBytes(json), .. data]);

    private static byte[] LengthPrefixed(ulong headerLength, byte[] rest)
    {
        var file = new byte[8 + rest.Length];
        BinaryPrimitives.WriteUInt64LittleEndian(file, headerLength);
        rest.CopyTo(file, 8);
        return file;
    }
}
