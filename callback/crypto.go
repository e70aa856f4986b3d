package callback

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// WeChat's message encryption (消息加解密):
//
//	key        = base64-decode(EncodingAESKey + "="), 32 bytes: AES-256
//	IV         = key[:16]
//	plaintext  = random(16) | uint32 big-endian len(msg) | msg | appid
//	padding    = PKCS#7 to a multiple of 32 bytes (pad values 1..32), not
//	             AES's 16: WeChat's samples pad to 32 and so must we
//	ciphertext = base64(AES-256-CBC(plaintext + padding))
const (
	randomPrefixLen = 16
	lengthFieldLen  = 4
	padBlock        = 32
)

// Crypter encrypts and decrypts message bodies for one EncodingAESKey and
// AppID. It is safe for concurrent use.
type Crypter struct {
	block cipher.Block
	iv    []byte
	appID []byte
}

// NewCrypter returns a Crypter for encodingAESKey (43 characters, as WeChat
// shows it) and appID.
func NewCrypter(encodingAESKey, appID string) (*Crypter, error) {
	if len(encodingAESKey) != 43 {
		return nil, fmt.Errorf("callback: EncodingAESKey must be 43 characters, got %d", len(encodingAESKey))
	}
	// Not base64.StdEncoding.Strict(): 43 characters carry 258 bits, and
	// WeChat's keys (the official sample's included) have non-zero bits
	// in the last two, which Strict refuses.
	key, err := base64.StdEncoding.DecodeString(encodingAESKey + "=")
	if err != nil || len(key) != 32 {
		return nil, errors.New("callback: EncodingAESKey is not base64 for 32 bytes")
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("callback: %w", err)
	}
	return &Crypter{block: block, iv: key[:aes.BlockSize], appID: []byte(appID)}, nil
}

// Decrypt decodes and decrypts an Encrypt value and returns the message
// inside. Every length is checked before it is used to slice: a garbled or
// hostile ciphertext gives an error, never a panic. Errors wrap
// ErrMalformed (base64), ErrDecrypt (lengths, padding) or ErrAppID.
func (c *Crypter) Decrypt(encrypted string) ([]byte, error) {
	data, err := base64.StdEncoding.DecodeString(encrypted)
	if err != nil {
		return nil, fmt.Errorf("%w: Encrypt is not base64: %w", ErrMalformed, err)
	}
	if len(data) == 0 || len(data)%padBlock != 0 {
		return nil, fmt.Errorf("%w: ciphertext of %d bytes is not a positive multiple of %d", ErrDecrypt, len(data), padBlock)
	}
	plain := make([]byte, len(data))
	cipher.NewCBCDecrypter(c.block, c.iv).CryptBlocks(plain, data)

	pad := int(plain[len(plain)-1])
	if pad < 1 || pad > padBlock {
		return nil, fmt.Errorf("%w: padding value %d", ErrDecrypt, pad)
	}
	for _, b := range plain[len(plain)-pad:] {
		if int(b) != pad {
			return nil, fmt.Errorf("%w: inconsistent padding", ErrDecrypt)
		}
	}
	plain = plain[:len(plain)-pad]

	if len(plain) < randomPrefixLen+lengthFieldLen {
		return nil, fmt.Errorf("%w: %d bytes is too short", ErrDecrypt, len(plain))
	}
	rest := plain[randomPrefixLen+lengthFieldLen:]
	// Compared as uint64 so a length near 2^32 cannot overflow int on a
	// 32-bit build.
	msgLen := uint64(binary.BigEndian.Uint32(plain[randomPrefixLen:]))
	if msgLen > uint64(len(rest)) {
		return nil, fmt.Errorf("%w: length field %d exceeds the %d bytes left", ErrDecrypt, msgLen, len(rest))
	}
	msg, appID := rest[:msgLen], rest[msgLen:]
	if !bytes.Equal(appID, c.appID) {
		return nil, ErrAppID
	}
	return msg, nil
}

// Encrypt encrypts msg for WeChat and returns the base64 Encrypt value. The
// 16-byte random prefix is read from random (crypto/rand.Reader in
// production; tests pass a fixed reader to get reproducible output).
func (c *Crypter) Encrypt(random io.Reader, msg []byte) (string, error) {
	n := randomPrefixLen + lengthFieldLen + len(msg) + len(c.appID)
	pad := padBlock - n%padBlock // 1..32: a full block when already aligned
	plain := make([]byte, n+pad)
	if _, err := io.ReadFull(random, plain[:randomPrefixLen]); err != nil {
		return "", fmt.Errorf("callback: random prefix: %w", err)
	}
	if uint64(len(msg)) > 1<<32-1 {
		return "", errors.New("callback: message too long to encrypt")
	}
	binary.BigEndian.PutUint32(plain[randomPrefixLen:], uint32(len(msg)))
	copy(plain[randomPrefixLen+lengthFieldLen:], msg)
	copy(plain[randomPrefixLen+lengthFieldLen+len(msg):], c.appID)
	for i := n; i < len(plain); i++ {
		plain[i] = byte(pad)
	}
	cipher.NewCBCEncrypter(c.block, c.iv).CryptBlocks(plain, plain)
	return base64.StdEncoding.EncodeToString(plain), nil
}
