// Minimal types for the parts of @msimerson/stun (CommonJS, untyped) the STUN tests use as an
// independent RFC 5389 implementation.
declare module '@msimerson/stun' {
  interface StunAddress {
    address: string;
    port: number;
    family: string;
  }
  interface StunMessageLike {
    readonly type: number;
    readonly transactionId: Buffer;
    getXorAddress(): StunAddress | undefined;
    getAddress(): StunAddress | undefined;
    getError(): { code: number; reason: string } | undefined;
    getUnknownAttributes(): number[] | undefined;
    getFingerprint(): number | undefined;
    getSoftware(): string | undefined;
  }
  interface StunRequestLike extends StunMessageLike {
    addSoftware(software: string): unknown;
    addFingerprint(): boolean;
    addMessageIntegrity(key: string): boolean;
    addAttribute(type: number, ...args: unknown[]): unknown;
    addXorAddress(address: string, port: number): unknown;
    addAddress(address: string, port: number): unknown;
    toBuffer(): Buffer;
  }
  const stun: {
    createMessage(type: number, transactionId?: Buffer): StunRequestLike;
    decode(message: Buffer): StunMessageLike;
    validateFingerprint(message: StunMessageLike): boolean;
  };
  export default stun;
}
