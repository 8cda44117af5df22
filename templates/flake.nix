# The config repo of one hyperhive agent.  It has no inputs: the hive's meta flake takes this
# repo (the applied copy) as its input agent-<name> and imports nixosModules.default into the
# agent's container configuration, next to nixpkgs and hyperhive's own module.
{
  description = "hyperhive agent config";

  outputs = { self }: {
    nixosModules.default = import ./agent.nix;
  };
}
