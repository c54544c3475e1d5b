return Attention.Cli.AttnCli.Run(args, Console.Out, Console.Error);
