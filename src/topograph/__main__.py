from topograph.cli import main

main()
