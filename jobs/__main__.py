from mmkg.jobs.cli import main

main()
