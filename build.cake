// Attention.Native build. Targets: Build, Test, Demo, Bench, BenchTorch, Pack, ApiBaseline, GpuBundle (see README.md).
//   ./build.sh --target=Test [--test-filter="TestCategory=Kernels"] [--configuration=Release]
using System.Text.RegularExpressions;

var target = Argument("target", "Build");
var configuration = Argument("configuration", "Release");
var testFilter = Argument("test-filter", "");
var benchFilter = Argument("bench-filter", "*");

var root = MakeAbsolute(Directory("."));
var solution = root.CombineWithFilePath("Attention.Native.sln");
var artifacts = root.Combine("artifacts");
var library = root.CombineWithFilePath("src/Managed/Attention.Native/Attention.Native.csproj");
// The second package: every variant as a TorchSharp module, and the ops as TorchSharp autograd functions.
var torchLibrary = root.CombineWithFilePath("src/Managed/Attention.Native.TorchSharp/Attention.Native.TorchSharp.csproj");
var libraries = new[] { library, torchLibrary };
var cli = root.CombineWithFilePath("src/Managed/Attention.Cli/Attention.Cli.csproj");
var tests = root.CombineWithFilePath("tests/Attention.Native.Tests/Attention.Native.Tests.csproj");
var bench = root.CombineWithFilePath("bench/Attention.Native.Bench/Attention.Native.Bench.csproj");
var summaryFile = artifacts.CombineWithFilePath("test-summary.txt");

string Bin(string project, string assembly) =>
    root.CombineWithFilePath($"{project}/bin/{configuration}/net10.0/{assembly}").FullPath;

// Runs a process, echoing its output as it comes, and returns the exit code and the lines.
(int ExitCode, List<string> Lines) Run(string file, string arguments, IDictionary<string, string> environment = null)
{
    var lines = new List<string>();
    var settings = new ProcessSettings
    {
        Arguments = arguments,
        EnvironmentVariables = environment ?? new Dictionary<string, string>(),
        RedirectStandardOutput = true,
        RedirectStandardError = true,
        RedirectedStandardOutputHandler = line => { if (line != null) { Console.WriteLine(line); lines.Add(line); } return null; },
        RedirectedStandardErrorHandler = line => { if (line != null) { Console.Error.WriteLine(line); lines.Add(line); } return null; },
    };
    int code = StartProcess(file, settings);
    return (code, lines);
}

// The number of tests and the categories of each test display name, from the runner's own listing with the same filter
// (none if the listing fails: the progress then has no total and the skip lines say "no category").
(int Count, Dictionary<string, string> Categories) TestCategories(string dll, string filter)
{
    var output = new List<string>();
    var settings = new ProcessSettings
    {
        Arguments = $"\"{dll}\" --list-tests json --no-ansi{filter}",
        RedirectStandardOutput = true,
        RedirectStandardError = true,
        RedirectedStandardOutputHandler = line => { if (line != null) output.Add(line); return null; },
        RedirectedStandardErrorHandler = line => null,
    };
    var map = new Dictionary<string, string>();
    int count = 0;
    if (StartProcess("dotnet", settings) != 0) return (0, map);
    var text = string.Join("\n", output);
    int start = text.IndexOf('{');
    if (start < 0) return (0, map);
    try
    {
        using var document = System.Text.Json.JsonDocument.Parse(text.Substring(start));
        foreach (var test in document.RootElement.GetProperty("tests").EnumerateArray())
        {
            var name = test.GetProperty("displayName").GetString() ?? "";
            var keys = test.TryGetProperty("traits", out var traits)
                ? traits.EnumerateArray().Select(t => t.GetProperty("key").GetString()).Where(k => !string.IsNullOrEmpty(k)).OrderBy(k => k).ToList()
                : new List<string>();
            // NUnit reports a test's categories as traits with empty values; a name shared by tests of different
            // categories gets all of them.
            var joined = string.Join(",", keys.Union(map.TryGetValue(name, out var seen) ? seen.Split(',', StringSplitOptions.RemoveEmptyEntries) : Array.Empty<string>()).OrderBy(k => k));
            map[name] = joined;
            count++;
        }
    }
    catch (Exception e) when (e is System.Text.Json.JsonException || e is KeyNotFoundException || e is InvalidOperationException)
    {
        map.Clear();
        count = 0;
    }
    return (count, map);
}

// Runs the test executable with --output detailed. On the console: a progress line every 15 s (and at the end), every failed
// test's result block in full, stderr, and the runner's summary; passed and skipped tests are only counted (the skipped
// ones with their category and reason, for one line per reason afterwards). Every line goes to the log file.
(int ExitCode, List<string> Lines, List<(string Category, string Reason)> Skipped) RunTests(
    string dll, string arguments, IDictionary<string, string> environment, (int Count, Dictionary<string, string> Categories) listing, string logPath)
{
    var gate = new object();
    var lines = new List<string>();
    var skipped = new List<(string Category, string Reason)>();
    var resultLine = new Regex(@"^(passed|skipped|failed|error|timed out|timeout|canceled|cancelled) (.+) \((\d+(h|m|s|ms) ?)+\)$");
    var categories = listing.Categories;
    int passedCount = 0, failedCount = 0, total = listing.Count;
    string block = "";            // "failed" while echoing a failed test's indented block, "skipped" while reading a reason
    string skippedName = "";
    var reason = new List<string>();   // the skip reason being read (its first line)
    bool inSummary = false;
    var clock = System.Diagnostics.Stopwatch.StartNew();
    using var log = new System.IO.StreamWriter(logPath, append: false);

    void EndSkipBlock()
    {
        if (block != "skipped") return;
        var category = categories.TryGetValue(skippedName, out var c) && c.Length > 0 ? c : "no category";
        skipped.Add((category, reason.Count == 0 ? "(no reason given)" : reason[0]));
        reason.Clear();
        block = "";
    }
    void Progress(string label)
    {
        int done = passedCount + failedCount + skipped.Count + (block == "skipped" ? 1 : 0);
        var of = total > 0 ? $"/{total}" : "";
        Console.WriteLine($"[{(int)clock.Elapsed.TotalMinutes}:{clock.Elapsed.Seconds:00}] {label} {done}{of} tests (passed {passedCount}, failed {failedCount}, skipped {done - passedCount - failedCount})");
    }
    void OnLine(string line, bool isError)
    {
        if (line == null) return;
        lock (gate)
        {
            lines.Add(line);
            log.WriteLine(line);
            if (isError) { Console.Error.WriteLine(line); return; }
            if (inSummary) { Console.WriteLine(line); return; }
            if (line.StartsWith("Test run summary:"))
            {
                EndSkipBlock();
                block = "";
                inSummary = true;
                Progress("finished:");
                Console.WriteLine(line);
                return;
            }
            var match = resultLine.Match(line);
            if (match.Success)
            {
                EndSkipBlock();
                block = "";
                switch (match.Groups[1].Value)
                {
                    case "passed": passedCount++; break;
                    case "skipped": block = "skipped"; skippedName = match.Groups[2].Value; break;
                    default: failedCount++; block = "failed"; Console.WriteLine(line); break;
                }
                return;
            }
            // A result block is the indented (or blank) lines under its result line; anything else is a test's own output.
            bool inBlock = line.Length == 0 || char.IsWhiteSpace(line[0]);
            if (block == "failed" && inBlock) { Console.WriteLine(line); return; }
            // The reason is the block's first line: indented output of the next test may follow it before its result line.
            if (block == "skipped" && inBlock) { if (reason.Count == 0 && line.Trim().Length > 0) reason.Add(line.Trim()); return; }
            EndSkipBlock();
            block = "";
        }
    }

    Console.WriteLine($"running {(total > 0 ? total.ToString() : "the")} tests; a progress line every 15 s, failures in full, skips counted by reason at the end");
    using var timer = new System.Threading.Timer(_ => { lock (gate) { if (!inSummary) Progress("running:"); } }, null, 15000, 15000);
    var settings = new ProcessSettings
    {
        Arguments = $"\"{dll}\" {arguments}",
        EnvironmentVariables = environment,
        RedirectStandardOutput = true,
        RedirectStandardError = true,
        RedirectedStandardOutputHandler = line => { OnLine(line, false); return null; },
        RedirectedStandardErrorHandler = line => { OnLine(line, true); return null; },
    };
    int code = StartProcess("dotnet", settings);
    lock (gate)
    {
        EndSkipBlock();
        if (!inSummary) Progress("stopped:");
        inSummary = true;
        log.Flush();
    }
    return (code, lines, skipped);
}

Task("Clean").Does(() =>
{
    CleanDirectory(artifacts);
    DotNetClean(solution.FullPath, new DotNetCleanSettings { Configuration = configuration });
});

Task("Build").Does(() =>
{
    DotNetBuild(solution.FullPath, new DotNetBuildSettings { Configuration = configuration });
});

// The torch reference tests (tests/Attention.Native.Tests/TorchReference) need TorchSharp's native library to load; on a
// libstdc++ older than GCC 13's, tests/torchsharp/prepare.sh leaves a mended private copy in artifacts/torchsharp-native
// (see README "Tests"); the libtorch bench peer loads it the same way. Never fails the build: where it cannot prepare,
// those tests skip with the reason.
void PrepareTorchSharpNative()
{
    if (!IsRunningOnUnix()) return;
    int code = StartProcess("bash", new ProcessSettings { Arguments = $"\"{root.CombineWithFilePath("tests/torchsharp/prepare.sh").FullPath}\"" });
    if (code != 0) Warning($"tests/torchsharp/prepare.sh exited with {code}: the torch reference tests will skip");
}

Task("TorchSharpNative")
    .IsDependentOn("Build")
    .Does(() => PrepareTorchSharpNative());

Task("Test")
    .IsDependentOn("Build")
    .IsDependentOn("TorchSharpNative")
    .Does(() =>
{
    EnsureDirectoryExists(artifacts);
    if (FileExists(summaryFile)) DeleteFile(summaryFile);
    var dll = Bin("tests/Attention.Native.Tests", "Attention.Native.Tests.dll");
    var filter = string.IsNullOrEmpty(testFilter) ? "" : $" --filter \"{testFilter}\"";
    // The test project is a Microsoft.Testing.Platform executable; run it directly. "detailed" gives one result line per
    // test, which the progress counts; captured output is shown for failed tests only (passing tests' output, which the
    // NUnit adapter also prints as it comes, goes to the log file).
    var args = "--no-ansi --progress off --output detailed --show-stdout failed --show-stderr failed" + filter
        + $" --results-directory \"{artifacts.Combine("TestResults").FullPath}\"";
    // A whole-suite run starts the kernel emulation (a g++-built process) with the suite, beside the mostly single-threaded tests.
    var environment = new Dictionary<string, string> { ["ATTENTION_NATIVE_EMULATION_EARLY"] = string.IsNullOrEmpty(testFilter) ? "1" : "0" };
    var categories = TestCategories(dll, filter);
    var log = artifacts.CombineWithFilePath("test-output.log");
    var run = RunTests(dll, args, environment, categories, log.FullPath);

    int Count(string name)
    {
        var match = run.Lines.Select(l => Regex.Match(l, $@"^\s*{name}:\s*(\d+)\s*$")).LastOrDefault(m => m.Success);
        return match is null ? -1 : int.Parse(match.Groups[1].Value);
    }
    int passed = Count("succeeded"), failed = Count("failed"), skipped = Count("skipped");
    if (passed < 0 || failed < 0 || skipped < 0)
    {
        // The runner died before its summary: show how it ended, and count that as a failure rather than as nothing.
        Console.WriteLine("the test runner ended without its summary; its last lines:");
        foreach (var line in run.Lines.TakeLast(40)) Console.WriteLine("  " + line);
        passed = Math.Max(passed, 0); failed = Math.Max(failed, 0) + 1; skipped = Math.Max(skipped, 0);
    }
    else if (run.ExitCode != 0 && failed == 0)
    {
        failed = 1; // non-zero exit with no failed test (e.g. zero tests ran) is still a failure
    }
    // One line per (category, reason) of the skipped tests instead of a block per test.
    foreach (var group in run.Skipped.GroupBy(s => (s.Category, s.Reason)).OrderByDescending(g => g.Count()).ThenBy(g => g.Key.Category))
    {
        Console.WriteLine($"skipped {group.Count()} ({group.Key.Category}): {group.Key.Reason}");
    }
    Console.WriteLine($"full runner output: {root.GetRelativePath(log).FullPath}");
    var summary = $"{passed} passed, {failed} failed, {skipped} skipped";
    System.IO.File.WriteAllText(summaryFile.FullPath, summary + "\n");
    Information(summary);
    if (failed > 0)
    {
        throw new Exception($"Tests failed (exit code {run.ExitCode}): {summary}");
    }
});

Task("Demo")
    .IsDependentOn("Build")
    .Does(() =>
{
    var (code, _) = Run("dotnet", $"\"{Bin("src/Managed/Attention.Cli", "attn.dll")}\" demo");
    if (code != 0) throw new Exception($"attn demo exited with {code}");
});

// The CPU backend against libtorch (bench/Attention.Native.TorchPeer): identical shapes interleaved in one process; writes
// bench/results/cpu-<n>-threads-<date>-torchsharp.md/.json and the table in README.md ("Against libtorch").
// OMP_WAIT_POLICY=PASSIVE: libgomp reads it when libtorch loads; spinning OpenMP workers would take our cores.
void BenchTorch()
{
    PrepareTorchSharpNative();
    var dll = Bin("bench/Attention.Native.TorchPeer", "Attention.Native.TorchPeer.dll");
    var (code, _) = Run("dotnet", $"\"{dll}\" --results \"{root.Combine("bench/results").FullPath}\" --readme \"{root.CombineWithFilePath("README.md").FullPath}\"",
        new Dictionary<string, string> { ["OMP_WAIT_POLICY"] = "PASSIVE" });
    if (code != 0) throw new Exception($"the libtorch side-by-side exited with {code}");
}

Task("BenchTorch")
    .IsDependentOn("Build")
    .Does(() => BenchTorch());

Task("Bench")
    .Does(() =>
{
    // --peers=torchsharp: the side-by-side with libtorch on the CPU (as BenchTorch) in place of the GPU peers' sweep.
    if (HasArgument("peers") && Argument<string>("peers") == "torchsharp")
    {
        DotNetBuild(root.CombineWithFilePath("bench/Attention.Native.TorchPeer/Attention.Native.TorchPeer.csproj").FullPath, new DotNetBuildSettings { Configuration = configuration });
        BenchTorch();
        return;
    }
    // attn bench: GFLOP/s of the attention core and Linear on the best backend here, in Release.
    EnsureDirectoryExists(artifacts.Combine("bench"));
    DotNetRun("src/Managed/Attention.Cli/Attention.Cli.csproj", new ProcessArgumentBuilder().Append("bench").Append("--json").AppendQuoted(artifacts.Combine("bench").CombineWithFilePath("attn-bench.json").FullPath),
        new DotNetRunSettings { Configuration = "Release" });
    // The sweep of every kernel and variant (reduced on the CPU), joined with --peers=<torch_peers.py output> when given;
    // <device>-<date>.json/.md/.svg land in artifacts/bench.
    var sweep = new ProcessArgumentBuilder().Append("bench").Append("--sweep").Append("--results").AppendQuoted(artifacts.Combine("bench").FullPath);
    if (HasArgument("peers"))
    {
        sweep.Append("--peers").AppendQuoted(MakeAbsolute(File(Argument<string>("peers"))).FullPath);
    }
    DotNetRun("src/Managed/Attention.Cli/Attention.Cli.csproj", sweep, new DotNetRunSettings { Configuration = "Release" });
    // BenchmarkDotNet needs a Release build of its own; it builds the project itself.
    DotNetRun(bench.FullPath, new ProcessArgumentBuilder().Append("--filter").AppendQuoted(benchFilter).Append("--artifacts").AppendQuoted(artifacts.Combine("bench").FullPath),
        new DotNetRunSettings { Configuration = "Release" });
});

// The NuGet package and its symbol package (.snupkg) in artifacts/packages, built as CI builds are (ContinuousIntegrationBuild:
// source paths mapped to /_/ for SourceLink) and deterministic: the zip entries carry the commit's time (or SOURCE_DATE_EPOCH),
// so one commit packs to the same bytes. Package validation runs as part of the pack.
Task("Pack")
    .Does(() =>
{
    var output = artifacts.Combine("packages");
    CleanDirectory(output);
    var properties = new DotNetMSBuildSettings().WithProperty("ContinuousIntegrationBuild", "true");
    if (string.IsNullOrEmpty(Environment.GetEnvironmentVariable("SOURCE_DATE_EPOCH")))
    {
        int git = StartProcess("git", new ProcessSettings { Arguments = "log -1 --format=%ct", RedirectStandardOutput = true, RedirectStandardError = true }, out IEnumerable<string> stamp);
        if (git == 0 && stamp.FirstOrDefault() is { Length: > 0 } seconds)
        {
            properties.WithProperty("DeterministicTimestamp", seconds.Trim());
        }
    }
    foreach (var project in libraries)
    {
        DotNetPack(project.FullPath, new DotNetPackSettings { Configuration = configuration, OutputDirectory = output, MSBuildSettings = properties });
    }
    foreach (var package in GetFiles(output.FullPath + "/*.nupkg").Concat(GetFiles(output.FullPath + "/*.snupkg")))
    {
        Information($"package: {package} ({new System.IO.FileInfo(package.FullPath).Length / 1024} KiB)");
    }
});

// Rewrites the public-API baselines of the two libraries (PublicAPI.Unshipped.txt beside each project) from the code:
// run it after adding, changing or removing public API, and commit the file with the change. The build fails (RS0016,
// RS0017) while the code and the baseline differ. PublicAPI.Shipped.txt (the released API) is left alone: a release moves
// the unshipped lines there; removing a shipped API needs a "*REMOVED*<line>" entry in the unshipped file, written by hand.
Task("ApiBaseline")
    .Does(() =>
{
    foreach (var project in libraries)
    {
        var unshipped = project.GetDirectory().CombineWithFilePath("PublicAPI.Unshipped.txt");
        System.IO.File.WriteAllText(unshipped.FullPath, "#nullable enable\n");
        // The analyzer's own code fix adds every public symbol missing from the baseline.
        var (code, _) = Run("dotnet", $"format analyzers \"{project.FullPath}\" --diagnostics RS0016 --severity warn");
        if (code != 0) throw new Exception($"dotnet format exited with {code}");
        DotNetBuild(project.FullPath, new DotNetBuildSettings { Configuration = configuration });
        Information($"public API baseline: {unshipped} ({System.IO.File.ReadLines(unshipped.FullPath).Count() - 1} unshipped entries)");
    }
});

// A folder and tar.xz that run the tests and `attn` on a Linux x64 host with an NVIDIA driver and no .NET:
// framework-dependent apps, the .NET runtime beside them, and run.sh.
Task("GpuBundle")
    .Does(() =>
{
    var bundle = artifacts.Combine("gpu-bundle");
    CleanDirectory(bundle);
    DotNetPublish(cli.FullPath, new DotNetPublishSettings { Configuration = configuration, OutputDirectory = bundle.Combine("attn") });
    DotNetPublish(tests.FullPath, new DotNetPublishSettings { Configuration = configuration, OutputDirectory = bundle.Combine("tests") });
    // The bundle runs on Linux x64: other platforms' native libraries (TorchSharp's managed package brings SkiaSharp's and
    // its own for Windows and macOS, ~40 MB) stay out of the carried archive.
    foreach (var app in new[] { "attn", "tests" })
    {
        foreach (var platform in GetDirectories(bundle.Combine(app).Combine("runtimes").FullPath + "/*"))
        {
            if (!platform.GetDirectoryName().StartsWith("linux"))
            {
                DeleteDirectory(platform, new DeleteDirectorySettings { Recursive = true });
            }
        }
    }

    // The runtime Cake itself runs on (the SDK's): <root>/shared/Microsoft.NETCore.App/<version>/, hostfxr and the host.
    var frameworkDir = System.Runtime.InteropServices.RuntimeEnvironment.GetRuntimeDirectory().TrimEnd('/', '\\');
    var dotnetRoot = System.IO.Path.GetFullPath(System.IO.Path.Combine(frameworkDir, "..", "..", ".."));
    var fxrDir = System.IO.Directory.GetDirectories(System.IO.Path.Combine(dotnetRoot, "host", "fxr"))
        .OrderByDescending(d => Version.Parse(System.IO.Path.GetFileName(d).Split('-')[0])).First();
    var runtime = bundle.Combine("dotnet");
    CopyDirectory(frameworkDir, runtime.Combine($"shared/Microsoft.NETCore.App/{System.IO.Path.GetFileName(frameworkDir)}"));
    CopyDirectory(fxrDir, runtime.Combine($"host/fxr/{System.IO.Path.GetFileName(fxrDir)}"));
    CopyFile(System.IO.Path.Combine(dotnetRoot, "dotnet"), runtime.CombineWithFilePath("dotnet"));
    System.IO.File.WriteAllText(bundle.CombineWithFilePath("run.sh").FullPath, "#!/usr/bin/env bash\n" + GpuBundleRunScript.Replace("\r\n", "\n") + "\n");
    StartProcess("chmod", $"+x \"{runtime.CombineWithFilePath("dotnet")}\" \"{bundle.CombineWithFilePath("run.sh")}\"");

    var archive = artifacts.CombineWithFilePath("attention-native-gpu-bundle.tar.xz");
    if (FileExists(archive)) DeleteFile(archive);
    int code = StartProcess("tar", new ProcessSettings
    {
        Arguments = $"-C \"{artifacts.FullPath}\" -cJf \"{archive.FullPath}\" gpu-bundle",
        EnvironmentVariables = new Dictionary<string, string> { ["XZ_OPT"] = "-6 -T0" },
    });
    if (code != 0) throw new Exception("tar failed");
    long bytes = new System.IO.FileInfo(archive.FullPath).Length;
    Information($"GPU bundle: {bundle.FullPath} and {archive.FullPath} ({bytes / (1024.0 * 1024.0):F1} MiB, .NET runtime {System.IO.Path.GetFileName(frameworkDir)})");
    if (bytes > 60L << 20) throw new Exception($"GPU bundle is {bytes} bytes, over the 60 MiB budget");
});

Task("Default").IsDependentOn("Build");

// run.sh of the GPU bundle: finds the CUDA libraries (system, CUDA_PATH, or the NVIDIA wheels a PyTorch
// install ships), then runs the tests or attn on the bundled .NET runtime.
// The shebang is prepended in code: Cake's preprocessor comments out lines that start with "#!".
const string GpuBundleRunScript = """
# Attention.Native GPU bundle: runs the tests or the attn command on a Linux x64 host that has an NVIDIA
# driver and no .NET installation.
#   ./run.sh test [--filter "TestCategory=Gpu"]   the test suite (Gpu tests need a device)
#   ./run.sh attn info | demo | ...                the attn command
#   ./run.sh sanitize memcheck|racecheck [test options]
#                                                  the tests under compute-sanitizer (its summary line last)
# Environment: ATTENTION_NATIVE_CUDA_LIBS (extra library folders), ATTENTION_NATIVE_CACHE (kernel cache),
# ATTENTION_NATIVE_PARITY_LOG (file receiving one line per GPU-vs-CPU comparison).
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export DOTNET_ROOT="$here/dotnet" DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
dirs=""
# NVIDIA's pip wheels (nvidia-cublas-*, nvidia-cuda-nvrtc-*, or the cu13 layout) hold the libraries PyTorch uses.
if command -v python3 >/dev/null 2>&1; then
  for site in $(python3 -c 'import site; print("\n".join(site.getsitepackages() + [site.getusersitepackages()]))' 2>/dev/null); do
    for d in "$site"/nvidia/*/lib "$site"/nvidia/cu*/lib; do
      [ -d "$d" ] && dirs="$dirs:$d"
    done
  done
fi
for d in "${CUDA_PATH:-}" "${CUDA_HOME:-}" /usr/local/cuda; do
  [ -n "$d" ] && [ -d "$d/lib64" ] && dirs="$dirs:$d/lib64"
done
export ATTENTION_NATIVE_CUDA_LIBS="${ATTENTION_NATIVE_CUDA_LIBS:+$ATTENTION_NATIVE_CUDA_LIBS}${dirs}"
export ATTENTION_NATIVE_CUDA_LIBS="${ATTENTION_NATIVE_CUDA_LIBS#:}"
cmd="${1:-}"
shift || true
case "$cmd" in
  test)
    log="$(mktemp)"
    "$DOTNET_ROOT/dotnet" "$here/tests/Attention.Native.Tests.dll" --no-ansi --progress off "$@" 2>&1 | tee "$log"
    code=${PIPESTATUS[0]}
    awk '/^[ \t]*succeeded:/{p=$2} /^[ \t]*failed:/{f=$2} /^[ \t]*skipped:/{s=$2} END{ if (p=="") {print "0 passed, 1 failed"} else {print p " passed, " f " failed, " s " skipped"} }' "$log"
    rm -f "$log"
    exit "$code"
    ;;
  attn)
    exec "$DOTNET_ROOT/dotnet" "$here/attn/attn.dll" "$@"
    ;;
  sanitize)
    tool="${1:-memcheck}"
    shift || true
    sanitizer="$(command -v compute-sanitizer || true)"
    for d in "${CUDA_PATH:-}" "${CUDA_HOME:-}" /usr/local/cuda; do
      [ -z "$sanitizer" ] && [ -n "$d" ] && [ -x "$d/bin/compute-sanitizer" ] && sanitizer="$d/bin/compute-sanitizer"
    done
    if [ -z "$sanitizer" ]; then
      echo "compute-sanitizer not found (PATH, CUDA_PATH, CUDA_HOME, /usr/local/cuda)" >&2
      exit 2
    fi
    log="$(mktemp)"
    "$sanitizer" --tool "$tool" --target-processes all --print-limit 50 \
      "$DOTNET_ROOT/dotnet" "$here/tests/Attention.Native.Tests.dll" --no-ansi --progress off "$@" 2>&1 | tee "$log"
    code=${PIPESTATUS[0]}
    grep -E "(ERROR|RACECHECK) SUMMARY" "$log" | tail -1
    rm -f "$log"
    exit "$code"
    ;;
  *)
    echo "usage: $0 test [test-platform options] | attn <command> [options] | sanitize memcheck|racecheck [test options]" >&2
    exit 2
    ;;
esac
""";

RunTarget(target);
