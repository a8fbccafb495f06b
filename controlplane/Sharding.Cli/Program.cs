using Sharding.Cli;

return ShardCtl.Run(args, Console.Out, Console.Error);
