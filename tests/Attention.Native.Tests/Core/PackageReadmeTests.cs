using System.Text.RegularExpressions;
using Attention.Native.Interop;

namespace Attention.Native.Tests.Core;

/// <summary>
/// The NuGet package's README (src/Managed/Attention.Native/Package/PACKAGE.md) shows the example the README tests run, and
/// names every library file the bindings try to load.
/// </summary>
public partial class PackageReadmeTests
{
    [Test]
    public void The_package_readme_shows_the_tested_example()
    {
        string source = File.ReadAllText(Path.Combine(Root(), "tests", "Attention.Native.Tests", "Core", "ReadmeExampleTests.cs"));
        var example = source[(source.IndexOf("// README-BEGIN", StringComparison.Ordinal) + 15)..source.IndexOf("// README-END", StringComparison.Ordinal)];
        var block = ApiBlock().Match(PackageReadme());
        Assert.That(block.Success, Is.True, "PACKAGE.md has a C# block under \"The API in short\"");
        static string[] Lines(string text) => text.Split('\n').Select(l => l.Trim()).Where(l => l.Length > 0 && !l.StartsWith("using Attention", StringComparison.Ordinal)).ToArray();
        Assert.That(Lines(block.Groups[1].Value), Is.EqualTo(Lines(example)));
    }

    [TestCase(NativeLibraryKind.Cuda)]
    [TestCase(NativeLibraryKind.Nvrtc)]
    [TestCase(NativeLibraryKind.Cublas)]
    public void The_package_readme_names_every_library_file_the_bindings_try(NativeLibraryKind kind)
    {
        string readme = PackageReadme();
        var names = NativeLibraries.CandidateNames(kind);
        Assert.That(names, Is.Not.Empty);
        Assert.That(names.Where(name => !readme.Contains($"`{name}`", StringComparison.Ordinal)), Is.Empty, $"{kind} file names missing from PACKAGE.md");
    }

    private static string PackageReadme() =>
        File.ReadAllText(Path.Combine(Root(), "src", "Managed", "Attention.Native", "Package", "PACKAGE.md"));

    private static string Root()
    {
        string root = AppContext.BaseDirectory;
        while (!File.Exists(Path.Combine(root, "Attention.Native.sln")))
        {
            root = Path.GetDirectoryName(root) ?? throw new AssertionException("repository root not found");
        }
        return root;
    }

    [GeneratedRegex("## The API in short\\s+```csharp\\n(.*?)```", RegexOptions.Singleline)]
    private static partial Regex ApiBlock();
}
