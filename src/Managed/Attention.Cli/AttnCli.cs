using System.CommandLine;
using Attention.Native.Interop;
using Spectre.Console;

namespace Attention.Cli;

/// <summary>The <c>attn</c> command: <c>info</c>, <c>demo</c>, <c>run</c>, <c>bench</c> and <c>compile</c>.</summary>
public static class AttnCli
{
    /// <summary>Parses <paramref name="args"/> and runs the command; returns the exit code.</summary>
    public static int Run(string[] args, TextWriter output, TextWriter error)
    {
        ArgumentNullException.ThrowIfNull(output);
        var root = new RootCommand("attn: modern attention mechanisms on CUDA (NVRTC + cuBLAS) with an exact CPU reference.");
        root.Subcommands.Add(InfoCommand.Create());
        root.Subcommands.Add(DemoCommand.Create());
        root.Subcommands.Add(CompileCommand.Create());
        root.Subcommands.Add(RunCommand.Create());
        root.Subcommands.Add(BenchCommand.Create());
        return root.Parse(args).Invoke(new InvocationConfiguration { Output = output, Error = error });
    }

    /// <summary>A Spectre console that writes plain text to <paramref name="writer"/> (colour only on a terminal).</summary>
    internal static IAnsiConsole Console(TextWriter writer)
    {
        bool terminal = ReferenceEquals(writer, System.Console.Out) && !System.Console.IsOutputRedirected;
        var console = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Out = new AnsiConsoleOutput(writer),
            Ansi = terminal ? AnsiSupport.Detect : AnsiSupport.No,
            ColorSystem = ColorSystemSupport.Detect,
            Interactive = InteractionSupport.No,
        });
        if (!terminal)
        {
            // Redirected output has no width to detect: keep tables on one line per row.
            console.Profile.Width = 160;
        }
        return console;
    }

    /// <summary>Resolves <c>--backend cpu|cuda|auto</c>; a CUDA backend that cannot start is a user error naming the option.</summary>
    internal static Backend SelectBackend(string name)
    {
        try
        {
            return name switch
            {
                "cpu" => Backend.Cpu,
                "cuda" => Backend.Default.Kind == BackendKind.Cuda ? Backend.Default : CudaBackend.Create(),
                _ => Backend.Default,
            };
        }
        catch (Exception e) when (e is DllNotFoundException or CudaException or NvrtcException or CublasException)
        {
            throw new InvalidOperationException($"--backend {name}: the CUDA backend cannot start: {e.Message}", e);
        }
    }

    /// <summary>
    /// Runs a command's action; a user error (bad input files or config, a backend that cannot start, a run too large for
    /// memory) becomes one line on stderr and exit code 2, never a stack trace.
    /// </summary>
    internal static int Guard(string command, TextWriter error, Func<int> action)
    {
        try
        {
            return action();
        }
        catch (Exception e) when (e is ArgumentException or InvalidDataException or IOException or KeyNotFoundException or InvalidOperationException
            or NotSupportedException or UnauthorizedAccessException or DllNotFoundException or CudaException or NvrtcException or CublasException)
        {
            // ArgumentException appends " (Parameter 'name')"; the message already starts with the name.
            string message = e is ArgumentException { ParamName: { } name } ? e.Message.Replace($" (Parameter '{name}')", "", StringComparison.Ordinal) : e.Message;
            error.WriteLine($"attn {command}: {OneLine(message)}");
            return 2;
        }
    }

    private static string OneLine(string message) => string.Join(' ', message.Split(['\r', '\n'], StringSplitOptions.RemoveEmptyEntries));

    internal static Option<string> BackendOption()
    {
        var option = new Option<string>("--backend")
        {
            Description = "cpu, cuda, or auto (CUDA when a device, NVRTC and cuBLAS load; else CPU)",
            DefaultValueFactory = _ => "auto",
        };
        option.AcceptOnlyFromAmong("cpu", "cuda", "auto");
        return option;
    }
}
